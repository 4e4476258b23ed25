package banksim

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// Config holds the knobs of one simulated institution. The zero value of
// every optional field is usable; New fills in the defaults noted below.
type Config struct {
	// OrgCode is the institution code (机构编号). Required: /guarantee/cost
	// refuses another orgcode, as a real institution would.
	OrgCode string
	// Name, Address and Phone go out as sellername, selleraddress and
	// sellerphone, and are printed on the letter. Defaults: "BankSim
	// <OrgCode>", a fictitious address and phone.
	Name    string
	Address string
	Phone   string

	// AppKey and AppSecret are the pair the procurement system issued; the
	// same pair is used in both directions (docs/decisions.md §3). Required.
	AppKey    string
	AppSecret string
	// Cipher selects the envelope cipher (docs/decisions.md §2); zero: AES/ECB,
	// raw key, base64.
	Cipher crypto.Options

	// Prefix is the path under which the provider endpoints are served.
	// Empty: "/sim"; "/" serves them at the root.
	Prefix string
	// PublicURL is the absolute base of the URLs that apply hands out, the
	// prefix included (e.g. "http://127.0.0.1:8090/sim"). Empty: derived
	// from each apply request's Host, which is right whenever the gateway
	// reaches the simulator directly.
	PublicURL string
	// GatewayURL is the gateway's base URL; callbacks go to
	// GatewayURL + "/api/guarantee/{paystate,applynotify,release}". Empty:
	// no callbacks are sent, but orders still move on (queryurl reports it).
	GatewayURL string

	// Rate is the premium rate (bhrate), default 0.0015; the fee is
	// bzjmoney × Rate rounded to fen (half away from zero), at least MinFee
	// (default 200.00 yuan).
	Rate   decimal.Decimal
	MinFee decimal.Decimal
	// DescribeRate is the share of /guarantee/cost answers that give a
	// describe text instead of money (the interface allows either).
	DescribeRate float64

	// Latency is added before every provider answer.
	Latency time.Duration
	// FailRate is the share of provider answers (POST endpoints) that fail,
	// split evenly among: HTTP 500, stat 0 (errcode 500001), a hang of
	// HangFor, and a 200 with a garbage body. HTTP 500 and stat 0 mean the
	// institution did nothing; after a hang or garbage the request WAS
	// processed and only the answer is lost, which is the outcome-unknown
	// case a gateway must recover from.
	FailRate float64
	// HangFor is how long a hanging answer sleeps (ended early when the
	// client goes away or the Sim closes). Default 15s (above the
	// gateway's default 10s timeout); at most 5m.
	HangFor time.Duration
	// RefuseRate is the share of issuances refused (applynotify staus "0").
	RefuseRate float64
	// RefundOnRefuse sends a refund paystate (type 2) after a refusal, as
	// an institution that took the premium must give it back.
	RefundOnRefuse bool
	// NoCancelURL makes apply answer without cancelurl, like an institution
	// that has no cancel interface (the field is optional).
	NoCancelURL bool

	// PayDelay is how long after an accepted apply the bidder pays
	// (paystate); IssueDelay how long after that the institution decides
	// (applynotify); ReleaseDelay how long after a cancel the release
	// callback comes.
	PayDelay     time.Duration
	IssueDelay   time.Duration
	ReleaseDelay time.Duration

	// PDFInNotify puts the letter into applynotify's bhfile. The interface
	// requires bhfile on issuance, but the zero value (false) leaves it out
	// so that the gateway has to fetch the file through pullurl
	// (docs/decisions.md §6 accepts such a notice). Set it for the normal case.
	PDFInNotify bool
	// PDFPadBytes, when larger than the letter, embeds an incompressible
	// image so that the file is at least that many bytes (and at most about
	// a KiB more), for load tests with big files. At most 64 MiB.
	PDFPadBytes int
	// GuaranteeNoPrefix starts every bhno, followed by the issuance date
	// and a sequence number. Default "BH". Give each Sim its own when
	// several run against one gateway, or their numbers collide.
	GuaranteeNoPrefix string

	// CallbackTimeout bounds each callback POST (default 10s).
	CallbackTimeout time.Duration
	// CallbackAttempts is how many times a callback is tried when the
	// gateway answers non-200 or stat 0 with errcode 500001, or cannot be
	// reached (default 5).
	CallbackAttempts int
	// CallbackBackoff is the wait before the first retry, doubled after
	// each one up to 30s (default 500ms).
	CallbackBackoff time.Duration

	// Seed seeds the math/rand source of every draw (faults, refusals,
	// describe answers, filler bytes): the same seed gives the same
	// sequence of draws.
	Seed uint64
	// Logger receives what the simulator does; nil discards it.
	Logger logrus.FieldLogger
}

// Bounds and defaults.
const (
	defaultPrefix       = "/sim"
	defaultHangFor      = 15 * time.Second
	maxHangFor          = 5 * time.Minute
	maxPDFPadBytes      = 64 << 20
	defaultCbTimeout    = 10 * time.Second
	defaultCbAttempts   = 5
	maxCbAttempts       = 20
	defaultCbBackoff    = 500 * time.Millisecond
	maxCbBackoff        = 30 * time.Second
	defaultGuaranteePfx = "BH"
)

var (
	defaultRate   = decimal.RequireFromString("0.0015")
	defaultMinFee = decimal.RequireFromString("200.00")
)

// normalize checks cfg and fills in the defaults. Errors name the field.
func (cfg Config) normalize() (Config, error) {
	c := cfg
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("banksim: "+format, args...)) }

	if strings.TrimSpace(c.OrgCode) == "" {
		bad("OrgCode is required")
	}
	if c.AppKey == "" {
		bad("AppKey is required")
	}
	if c.AppSecret == "" {
		bad("AppSecret is required")
	}
	if c.Name == "" {
		c.Name = "BankSim " + c.OrgCode
	}
	if c.Address == "" {
		c.Address = "1 Simulation Road, Haidian District, Beijing"
	}
	if c.Phone == "" {
		c.Phone = "010-00000000"
	}
	// What goes out on the wire must fit the interface's string(n).
	for _, f := range []struct {
		name, v string
		max     int
	}{{"Name", c.Name, 64}, {"Address", c.Address, 256}, {"Phone", c.Phone, 64}, {"OrgCode", c.OrgCode, 128}} {
		if e := wire.CheckLen(f.name, f.v, f.max); e != nil {
			bad("%s", e)
		}
	}

	switch p := strings.TrimRight(c.Prefix, "/"); {
	case c.Prefix == "":
		c.Prefix = defaultPrefix
	case strings.ContainsAny(p, "{} \t\r\n?#"):
		bad("Prefix %q: must be a plain path", c.Prefix)
	case p == "":
		c.Prefix = "" // "/": served at the root
	case !strings.HasPrefix(p, "/"):
		c.Prefix = "/" + p
	default:
		c.Prefix = p
	}

	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.GatewayURL = strings.TrimRight(c.GatewayURL, "/")
	for _, f := range []struct{ name, v string }{{"PublicURL", c.PublicURL}, {"GatewayURL", c.GatewayURL}} {
		if f.v == "" {
			continue
		}
		u, err := url.Parse(f.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("%s %q: want an absolute http(s) URL", f.name, f.v)
		}
	}

	if c.Rate.IsZero() {
		c.Rate = defaultRate
	}
	if c.MinFee.IsZero() {
		c.MinFee = defaultMinFee
	}
	if c.Rate.IsNegative() || c.MinFee.IsNegative() {
		bad("Rate and MinFee must not be negative")
	}
	if !c.Rate.Equal(c.Rate.Round(6)) {
		bad("Rate %s: at most six decimals (bhrate)", c.Rate)
	}

	for _, f := range []struct {
		name string
		v    float64
	}{{"FailRate", c.FailRate}, {"RefuseRate", c.RefuseRate}, {"DescribeRate", c.DescribeRate}} {
		if !(f.v >= 0 && f.v <= 1) { // also refuses NaN
			bad("%s %v: want a share between 0 and 1", f.name, f.v)
		}
	}

	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Latency", c.Latency}, {"HangFor", c.HangFor}, {"PayDelay", c.PayDelay}, {"IssueDelay", c.IssueDelay},
		{"ReleaseDelay", c.ReleaseDelay}, {"CallbackTimeout", c.CallbackTimeout}, {"CallbackBackoff", c.CallbackBackoff}} {
		if f.v < 0 {
			bad("%s %v: must not be negative", f.name, f.v)
		}
	}
	if c.HangFor == 0 {
		c.HangFor = defaultHangFor
	}
	c.HangFor = min(c.HangFor, maxHangFor)
	if c.CallbackTimeout == 0 {
		c.CallbackTimeout = defaultCbTimeout
	}
	if c.CallbackBackoff == 0 {
		c.CallbackBackoff = defaultCbBackoff
	}
	c.CallbackBackoff = min(c.CallbackBackoff, maxCbBackoff)
	switch {
	case c.CallbackAttempts == 0:
		c.CallbackAttempts = defaultCbAttempts
	case c.CallbackAttempts < 0 || c.CallbackAttempts > maxCbAttempts:
		bad("CallbackAttempts %d: want 1..%d", c.CallbackAttempts, maxCbAttempts)
	}

	if c.PDFPadBytes < 0 || c.PDFPadBytes > maxPDFPadBytes {
		bad("PDFPadBytes %d: want 0..%d", c.PDFPadBytes, maxPDFPadBytes)
	}
	if c.GuaranteeNoPrefix == "" {
		c.GuaranteeNoPrefix = defaultGuaranteePfx
	}
	// prefix + yyyyMMdd + at least 6 digits must fit bhno's string(64).
	if e := wire.CheckLen("GuaranteeNoPrefix", c.GuaranteeNoPrefix, 64-8-10); e != nil {
		bad("%s", e)
	}
	return c, errors.Join(errs...)
}
