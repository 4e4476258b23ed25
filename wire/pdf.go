package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pdfcpu/pdfcpu/pkg/api"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/model"
)

// pdfMagic starts every PDF file.
var pdfMagic = []byte("%PDF-")

// IsPDF reports whether b starts like a PDF file. It only tells a PDF from
// the other forms a body may take (验真 accepts the file or its digest);
// whether b is a PDF is CheckPDF's question.
func IsPDF(b []byte) bool { return bytes.HasPrefix(b, pdfMagic) }

// ErrNotPDF is wrapped by every refusal of CheckPDF.
var ErrNotPDF = errors.New("not a PDF")

// pdfcpuOnce keeps pdfcpu away from the disk: by default it writes a
// configuration directory under the user's home on first use, which a
// container with a read-only root file system refuses (and a gateway has no
// business doing).
var pdfcpuOnce sync.Once

// CheckPDF reports whether b is a PDF that a reader can open: pdfcpu reads
// its header, cross-reference table and trailer and validates the document
// in its relaxed mode, which tolerates what real-world producers commonly
// get wrong but not a file that is no document at all (docs/decisions.md
// §37). A document encrypted with a user password cannot be validated
// without it; its structure up to the encryption dictionary read, it is
// accepted. The error wraps ErrNotPDF and says what pdfcpu found, briefly.
func CheckPDF(b []byte) (err error) {
	if !IsPDF(b) {
		return fmt.Errorf("%w: it does not start with %%PDF-", ErrNotPDF)
	}
	pdfcpuOnce.Do(api.DisableConfigDir)
	defer func() {
		// pdfcpu recovers its own faults; anything else it panics with on
		// a malformed file is a refusal of that file, not a crash.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: the parser gave up (%v)", ErrNotPDF, p)
		}
	}()
	conf := model.NewDefaultConfiguration()
	conf.ValidationMode = model.ValidationRelaxed
	conf.Optimize = false
	err = api.Validate(bytes.NewReader(b), conf)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pdfcpu.ErrWrongPassword):
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotPDF, briefly(err.Error()))
}

// briefly bounds a parser's message for an answer and an audit row.
func briefly(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > 160 {
		msg = string(r[:160]) + "…"
	}
	return msg
}
