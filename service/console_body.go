package service

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/procurement/gateway/wire"
)

// A callback's body as the console shows it: decrypted with its
// institution's cipher, pretty-printed in the order the institution wrote
// its fields, personal data masked as in the logs, and the PDF shown as its
// size and SHA-256 rather than megabytes of Base64.

// What became of showing a body.
const (
	BodyShown        = "shown"         // JSON holds it
	BodyNotKept      = "not_kept"      // over the audit limit, refused unread, or not kept
	BodyRemoved      = "removed"       // kept, then emptied by retention (retention.raw_bodies)
	BodyNoCipher     = "no_cipher"     // no configured institution to decrypt it with
	BodyNotEnvelope  = "not_envelope"  // not one of the envelopes of docs/decisions.md §1
	BodyNotDecrypted = "not_decrypted" // does not decrypt under the institution's secret
	BodyNotJSON      = "not_json"      // decrypts to something that is not a JSON object
)

// CallbackBody is a callback's body for an operator's eyes.
type CallbackBody struct {
	State string // Body*
	JSON  string // pretty, masked, when State is BodyShown
	// Files are the PDFs it carried (bhfile), by size and digest.
	Files []EmbeddedFile
}

// EmbeddedFile is a file carried inside a callback, described.
type EmbeddedFile struct {
	Field  string
	Size   int
	Sha256 string
	PDF    bool
}

// maskedFields are the personal data a payload may carry, with their masks
// (service/mask.go, as the logs use them).
var maskedFields = map[string]func(string) string{
	"qycode":      MaskCreditCode,
	"qyjbzh":      MaskAccount,
	"jbrname":     MaskName,
	"jbrphone":    MaskPhone,
	"jbremail":    MaskEmail,
	"paybankname": MaskName,
	"paybankno":   MaskAccount,
}

// fileFields carry a Base64 PDF.
var fileFields = map[string]bool{"bhfile": true, "file": true}

// MaskName keeps a name's first character: 张*, 某*******.
func MaskName(s string) string { return maskMiddle(s, 1, 0) }

// showBody decrypts and presents a stored callback body; kept says whether
// the body was stored when the callback came (bodyKept), so that one
// missing now was removed by retention.
func showBody(inst *Institution, raw []byte, kept bool) CallbackBody {
	switch {
	case len(raw) == 0 && kept:
		return CallbackBody{State: BodyRemoved}
	case len(raw) == 0: // SQLite keeps a nil body as an empty one
		return CallbackBody{State: BodyNotKept}
	case inst == nil || inst.Cipher == nil:
		return CallbackBody{State: BodyNoCipher}
	}
	ct, err := wire.Ciphertext(raw)
	if err != nil {
		return CallbackBody{State: BodyNotEnvelope}
	}
	plain, err := inst.Cipher.Decrypt(ct)
	if err != nil {
		return CallbackBody{State: BodyNotDecrypted}
	}
	return presentJSON(plain)
}

// bodyKept reports whether a callback's body was stored when it came: it
// was read (it has a digest) and within the audit limit (callbacks.go).
// Such a callback without a body now had it emptied by the retention job.
func bodyKept(sha256 string, size int64) bool {
	return sha256 != "" && size >= 0 && size <= rawAuditLimit
}

// presentJSON pretty-prints a decrypted payload with its personal data
// masked. Anything but one JSON object is not shown: what it holds could
// not be masked field by field.
func presentJSON(plain []byte) CallbackBody {
	trimmed := bytes.TrimSpace(plain)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return CallbackBody{State: BodyNotJSON}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber() // money and times exactly as sent
	p := &presenter{dec: dec}
	if err := p.value("", 0); err != nil {
		return CallbackBody{State: BodyNotJSON}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return CallbackBody{State: BodyNotJSON}
	}
	return CallbackBody{State: BodyShown, JSON: p.out.String(), Files: p.files}
}

type presenter struct {
	dec   *json.Decoder
	out   bytes.Buffer
	files []EmbeddedFile
}

// value writes the next value of the stream, the member key of its object
// (if any) deciding its mask, indented by depth.
func (p *presenter) value(key string, depth int) error {
	tok, err := p.dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		closing := map[json.Delim]string{'{': "}", '[': "]"}[t]
		if closing == "" {
			return fmt.Errorf("unexpected %v", t)
		}
		p.out.WriteString(t.String())
		n := 0
		for p.dec.More() {
			if n > 0 {
				p.out.WriteByte(',')
			}
			p.newline(depth + 1)
			member := key
			if t == '{' {
				kt, err := p.dec.Token()
				if err != nil {
					return err
				}
				k, _ := kt.(string)
				member = k
				writeJSON(&p.out, k)
				p.out.WriteString(": ")
			}
			if err := p.value(member, depth+1); err != nil {
				return err
			}
			n++
		}
		if _, err := p.dec.Token(); err != nil {
			return err
		}
		if n > 0 {
			p.newline(depth)
		}
		p.out.WriteString(closing)
	case string:
		switch {
		case fileFields[key]:
			f := describeFile(key, t)
			p.files = append(p.files, f)
			writeJSON(&p.out, fmt.Sprintf("<%d bytes, sha256 %s>", f.Size, f.Sha256))
		case maskedFields[key] != nil:
			writeJSON(&p.out, maskedFields[key](t))
		default:
			writeJSON(&p.out, t)
		}
	case json.Number:
		if maskedFields[key] != nil { // an account number sent as a number
			writeJSON(&p.out, maskedFields[key](t.String()))
		} else {
			p.out.WriteString(t.String())
		}
	default: // bool, nil
		writeJSON(&p.out, t)
	}
	return nil
}

func (p *presenter) newline(depth int) {
	p.out.WriteByte('\n')
	p.out.WriteString(strings.Repeat("  ", depth))
}

func writeJSON(w *bytes.Buffer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	w.Truncate(w.Len() - 1) // Encode's newline
}

// describeFile gives a carried file's decoded size and digest (of the
// Base64 text itself when it does not decode).
func describeFile(field, b64 string) EmbeddedFile {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		b = []byte(b64)
	}
	sum := sha256.Sum256(b)
	return EmbeddedFile{Field: field, Size: len(b), Sha256: hex.EncodeToString(sum[:]), PDF: err == nil && wire.IsPDF(b)}
}
