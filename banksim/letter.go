package banksim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-pdf/fpdf"
	"github.com/shopspring/decimal"
)

// The guarantee letter is a real PDF made with fpdf.
//
// Its visible text is ASCII, English and pinyin: Chinese needs a TTF font
// loaded into fpdf (AddUTF8Font), and none ships with the repository or
// the module; fpdf's core fonts only know cp1252. The order's values are
// often Chinese (company and project names), so they are printed with the
// non-ASCII characters escaped as \uXXXX, and the exact UTF-8 values are put
// into the document information (Title, Subject, Keywords), which fpdf
// writes as UTF-16 and every viewer and pdfinfo shows correctly.
//
// Rendering is deterministic (fixed dates, sorted catalogs, a filler drawn
// from the seed), so the letter is not stored but rendered again whenever
// it is needed: pullurl gives the very bytes applynotify carried, and a load
// test with 10 MiB letters does not hold 10 MiB per order.

// validityDays is how long after the bid deadline the guarantee stands:
// the usual bid validity period.
const validityDays = 90

// fillerWidth is the width in pixels of the padding image. Its rows are
// what the padding is counted in, so narrow rows keep the overshoot small.
const fillerWidth = 1024

// fillerRowBytes is what one row weighs in the PDF: a PNG filter byte and
// the pixels, stored uncompressed (they are random: nothing to gain).
const fillerRowBytes = fillerWidth + 1

// Letter renders the guarantee letter of an issued (or since cancelled)
// order, as applynotify and pullurl send it.
func (s *Sim) Letter(orderNo string) ([]byte, error) {
	o, ok := s.Order(orderNo)
	if !ok {
		return nil, fmt.Errorf("banksim: no order %q", orderNo)
	}
	if o.GuaranteeNo == "" {
		return nil, fmt.Errorf("banksim: order %q is %s, no guarantee issued", orderNo, o.Status)
	}
	return s.letter(o)
}

// letter renders o, padded to PDFPadBytes when asked.
func (s *Sim) letter(o Order) ([]byte, error) {
	pdf, err := s.render(o, nil)
	if err != nil || len(pdf) >= s.cfg.PDFPadBytes {
		return pdf, err
	}
	// A one-row filler measures what the image and the appendix page cost
	// besides the rows (cheap: a few KiB); the rows then fill what is left,
	// each costing its bytes plus the stored deflate blocks' 5 bytes per
	// 64 KiB. The guess lands within a row above the target; the loop only
	// runs again should it land below.
	img, err := s.fill.png(1)
	if err != nil {
		return nil, err
	}
	if pdf, err = s.render(o, img); err != nil {
		return nil, err
	}
	const rowCost = fillerRowBytes * (1 + 5.0/65535)
	rows := 1 + int(math.Ceil(float64(s.cfg.PDFPadBytes-len(pdf))/rowCost))
	for range 4 {
		if img, err = s.fill.png(rows); err != nil {
			return nil, err
		}
		if pdf, err = s.render(o, img); err != nil {
			return nil, err
		}
		short := s.cfg.PDFPadBytes - len(pdf)
		if short <= 0 {
			return pdf, nil
		}
		rows += ceilDiv(short, fillerRowBytes)
	}
	return nil, fmt.Errorf("banksim: padding the letter to %d bytes did not converge", s.cfg.PDFPadBytes)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// render draws the letter; filler, a PNG, goes on an appendix page.
func (s *Sim) render(o Order, filler []byte) ([]byte, error) {
	req := o.Request
	pdf := fpdf.New("P", "mm", "A4", "")
	// Determinism: fpdf otherwise stamps time.Now() and walks maps.
	pdf.SetCatalogSort(true)
	pdf.SetCreationDate(o.DecidedAt)
	pdf.SetModificationDate(o.DecidedAt)
	pdf.SetTitle("电子投标保函 Electronic Bid Bond Guarantee "+o.GuaranteeNo, true)
	pdf.SetSubject(fmt.Sprintf("申请人 %s; 项目 %s %s; 标段 %s %s; 受益人 %s; 金额 %s 元",
		req.ApplicantName, req.ProjectCode, req.ProjectName, req.LotCode, req.LotName,
		req.TendererName, req.DepositAmount.StringFixed(2)), true)
	pdf.SetKeywords(fmt.Sprintf("orderno=%s bhno=%s orgcode=%s", req.OrderNo, o.GuaranteeNo, s.cfg.OrgCode), true)
	pdf.SetAuthor(s.cfg.Name, true)
	pdf.SetCreator("banksim, simulated institution of the procurement gateway", false)
	pdf.SetMargins(20, 20, 20)
	pdf.SetAutoPageBreak(true, 20)
	pdf.AddPage()

	pdf.SetFont("Helvetica", "B", 16)
	pdf.CellFormat(0, 9, "Electronic Bid Bond Guarantee (Dian Zi Tou Biao Bao Han)", "", 1, "C", false, 0, "")
	pdf.SetFont("Helvetica", "", 9)
	pdf.SetTextColor(160, 0, 0)
	pdf.CellFormat(0, 5, "SPECIMEN - issued by a simulated institution (banksim) for testing; not a real guarantee", "", 1, "C", false, 0, "")
	pdf.SetTextColor(0, 0, 0)
	pdf.Ln(4)

	field := func(label, value string) {
		x, y := pdf.GetXY()
		pdf.SetFont("Helvetica", "B", 10)
		pdf.MultiCell(62, 6, label, "", "L", false)
		yLabel := pdf.GetY()
		pdf.SetXY(x+62, y)
		pdf.SetFont("Helvetica", "", 10)
		pdf.MultiCell(0, 6, ascii(value), "", "L", false)
		pdf.SetXY(x, max(yLabel, pdf.GetY()))
	}
	validUntil := req.DeadlineAt.AddDate(0, 0, validityDays)
	field("Guarantee No. (Bao Han Bian Hao)", o.GuaranteeNo)
	field("Order No. (Ding Dan Hao)", req.OrderNo)
	field("Issuer (Chu Han Ji Gou)", s.cfg.Name+" ["+s.cfg.OrgCode+"]")
	field("Applicant (Tou Biao Ren)", req.ApplicantName)
	field("Applicant credit code", req.ApplicantCode)
	field("Beneficiary (Zhao Biao Ren)", req.TendererName)
	field("Beneficiary credit code", req.TendererCode)
	field("Project (Xiang Mu)", req.ProjectCode+" - "+req.ProjectName)
	field("Lot (Biao Duan)", req.LotCode+" - "+req.LotName)
	field("Guaranteed amount", "CNY "+groupThousands(req.DepositAmount))
	field("Premium (Bao Fei)", fmt.Sprintf("CNY %s (rate %s)", groupThousands(o.Fee), s.cfg.Rate.String()))
	field("Bid deadline", when(req.DeadlineAt))
	field("Bid opening", when(req.OpeningAt))
	field("Issued at", when(o.DecidedAt))
	field("Valid until", when(validUntil))
	pdf.Ln(4)

	pdf.SetFont("Helvetica", "", 10)
	pdf.MultiCell(0, 5.5, ascii(fmt.Sprintf(
		"At the request of the Applicant, the Issuer irrevocably undertakes to pay the Beneficiary any sum "+
			"up to CNY %s within seven working days of receiving its first written demand stating that the "+
			"Applicant withdrew its bid within the bid validity period, or, having been awarded the contract, "+
			"failed to sign it or to furnish the performance security. This guarantee covers lot %s of project %s, "+
			"takes effect at the bid deadline and expires on %s, or earlier when the Beneficiary returns it "+
			"or it is cancelled.",
		groupThousands(req.DepositAmount), req.LotCode, req.ProjectCode, validUntil.In(shanghai).Format(time.DateOnly))),
		"", "J", false)
	pdf.Ln(8)
	pdf.MultiCell(0, 5.5, ascii("For and on behalf of "+s.cfg.Name), "", "R", false)
	pdf.MultiCell(0, 5.5, ascii(s.cfg.Address+"  Tel. "+s.cfg.Phone), "", "R", false)
	pdf.MultiCell(0, 5.5, when(o.DecidedAt), "", "R", false)

	if filler != nil {
		pdf.AddPage()
		pdf.SetFont("Helvetica", "B", 11)
		pdf.CellFormat(0, 7, "Appendix: security pattern", "", 1, "L", false, 0, "")
		pdf.SetFont("Helvetica", "", 9)
		pdf.MultiCell(0, 5, "Random noise embedded to make this file as large as a load test asks (PDFPadBytes). "+
			"It carries no information.", "", "L", false)
		opts := fpdf.ImageOptions{ImageType: "PNG"}
		pdf.RegisterImageOptionsReader("filler", opts, bytes.NewReader(filler))
		pdf.ImageOptions("filler", 20, pdf.GetY()+4, 170, 220, false, opts, 0, "")
	}

	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return nil, fmt.Errorf("banksim: rendering the letter: %w", err)
	}
	return buf.Bytes(), nil
}

// when prints a time in China time, the way the letter's reader thinks.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(shanghai).Format(time.DateTime) + " (UTC+8)"
}

// groupThousands prints money as 1,234,567.89.
func groupThousands(d decimal.Decimal) string {
	s := d.StringFixed(2)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return sign + b.String() + "." + frac
}

// ascii makes s printable with fpdf's core fonts: ASCII stays, control
// characters become spaces, anything else becomes \uXXXX (see above).
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		case r < 0x80:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	return b.String()
}

// filler makes the padding image: grey noise, which no compressor shrinks,
// so the file stays as big on the wire (gzip) and on disk as it is. Its
// bytes come from a ChaCha8 stream seeded by Seed: the same rows give the
// same image. The few sizes in use are cached.
type filler struct {
	seed  uint64
	mu    sync.Mutex
	cache map[int][]byte // rows → PNG
}

// maxFillerCache bounds the cache: letters of one run differ by a row or
// two at most, so a handful of sizes covers them.
const maxFillerCache = 4

// png returns the noise image of rows × fillerWidth pixels as a PNG.
func (f *filler) png(rows int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img, ok := f.cache[rows]; ok {
		return img, nil
	}

	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], f.seed)
	gray := image.NewGray(image.Rect(0, 0, fillerWidth, rows))
	rand.NewChaCha8(seed).Read(gray.Pix)

	var buf bytes.Buffer
	buf.Grow(rows*fillerRowBytes + 1024)
	// No compression: noise does not compress, and it makes the encoder
	// skip its adaptive filters, so every row costs exactly fillerRowBytes.
	enc := png.Encoder{CompressionLevel: png.NoCompression}
	if err := enc.Encode(&buf, gray); err != nil {
		return nil, fmt.Errorf("banksim: encoding the filler: %w", err)
	}

	if f.cache == nil || len(f.cache) >= maxFillerCache {
		f.cache = make(map[int][]byte)
	}
	f.cache[rows] = buf.Bytes()
	return buf.Bytes(), nil
}
