package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/model"
)

// Sign-in to the operators' console. A session is a row of
// console_sessions, keyed by the SHA-256 of a random token that only the
// browser holds (in an HttpOnly cookie): every replica finds it, a
// sign-out deletes it everywhere at once, and a copy of the table opens
// nothing. The alternative, a signed cookie, would need a signing key
// shared by every replica (one more secret to configure and rotate) and a
// server-side list of revoked cookies all the same to make sign-out real;
// the row costs one primary-key read per page.

// The console's roles: a viewer reads, an operator also acts.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

// Codes of the console's errors beside those of the API.
const (
	EForbidden   = "forbidden"    // 403: a viewer asked for an operator's action
	ERateLimited = "rate_limited" // 429: too many failed sign-ins; Wait says how long
)

// Failed sign-ins: each is answered only after signInFailDelay, and each
// user and each address has a bucket of failures that refills slowly; an
// empty bucket refuses the sign-in before the password is even looked at.
// Only a failure takes from the buckets, so that a user who signs in often
// is never held.
const (
	signInFailDelay = time.Second
	userFailBurst   = 5
	userFailEvery   = time.Minute
	addrFailBurst   = 20
	addrFailEvery   = 10 * time.Second
	// maxLimiters bounds the per-address buckets kept; past it, addresses
	// share one bucket until idle ones are dropped.
	maxLimiters = 10000
	// bcryptAtOnce bounds the password checks running at once: each takes
	// tens of milliseconds of a core that callbacks need too.
	bcryptAtOnce = 2
)

// ConsoleUser is one person who may sign in.
type ConsoleUser struct {
	Name         string
	PasswordHash string
	Role         string // RoleViewer or RoleOperator
}

// ConsoleSettings are the console's: who may sign in and for how long.
type ConsoleSettings struct {
	Users      []ConsoleUser
	SessionTTL time.Duration
}

// Actor is who does something through the console, and from where.
type Actor struct {
	User       string
	Role       string
	RemoteAddr string
	RequestID  string
}

// Session is a signed-in user. Token is set only by SignIn: afterwards
// only the browser has it.
type Session struct {
	Token     string
	User      string
	Role      string
	CSRF      string
	ExpiresAt time.Time
}

// SignInLimited is the cause of an ERateLimited error: how long to wait.
type SignInLimited struct{ Wait time.Duration }

func (e *SignInLimited) Error() string {
	return fmt.Sprintf("too many failed sign-ins, wait %s", e.Wait)
}

// Console is the service as the operators' console uses it: sign-in, the
// pages' views (console.go) and the operators' actions, each recorded
// (console_actions.go).
type Console struct {
	s       *Service
	users   map[string]ConsoleUser
	ttl     time.Duration
	limits  *signInLimits
	bcrypts chan struct{}
	// dummy is compared when the user is unknown, so that an unknown
	// name takes as long to refuse as a wrong password.
	dummyOnce sync.Once
	dummy     []byte
}

// NewConsole builds the console's service over s.
func NewConsole(s *Service, set ConsoleSettings) *Console {
	c := &Console{s: s, users: map[string]ConsoleUser{}, ttl: set.SessionTTL, limits: newSignInLimits(),
		bcrypts: make(chan struct{}, bcryptAtOnce)}
	for _, u := range set.Users {
		c.users[u.Name] = u
	}
	return c
}

// SessionTTL is how long a sign-in lasts.
func (c *Console) SessionTTL() time.Duration { return c.ttl }

// SignIn checks a user's password and opens a session. Failed attempts
// are slowed and limited per user and per address (remote, host:port).
// Returns EUnauthorized (unknown user or wrong password: the same answer),
// ERateLimited (with a *SignInLimited cause), EUnavailable.
func (c *Console) SignIn(ctx context.Context, name, password, remote, requestID string) (*Session, error) {
	u, known := c.users[name]
	userKey := "?" // unknown names share a bucket, so that made-up ones do not fill the map
	if known {
		userKey = name
	}
	addr := addrKey(remote)
	limited := func(wait time.Duration) error {
		c.s.log.WithFields(map[string]any{"user": logUser(name, known), "remote": remote, "request_id": requestID,
			"wait_s": int(wait.Seconds()) + 1}).Warn("console sign-in refused: too many failures")
		return &Error{Code: ERateLimited, Message: "too many failed sign-ins", Err: &SignInLimited{Wait: wait}}
	}
	if wait := c.limits.wait(userKey, addr); wait > 0 {
		return nil, limited(wait)
	}
	ok, err := c.checkPassword(ctx, u, known, password, func() time.Duration { return c.limits.wait(userKey, addr) })
	var e *SignInLimited
	if errors.As(err, &e) {
		return nil, limited(e.Wait)
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		c.limits.fail(userKey, addr)
		select {
		case <-time.After(signInFailDelay):
		case <-ctx.Done():
		}
		c.s.log.WithFields(map[string]any{"user": logUser(name, known), "remote": remote, "request_id": requestID}).
			Warn("console sign-in failed")
		return nil, errf(EUnauthorized, "", "wrong user name or password")
	}
	token, id, err := newToken()
	if err != nil {
		return nil, &Error{Code: EInternal, Message: "no randomness", Err: err}
	}
	csrf, _, err := newToken()
	if err != nil {
		return nil, &Error{Code: EInternal, Message: "no randomness", Err: err}
	}
	now := c.s.now()
	sess := &model.ConsoleSession{ID: id, UserName: u.Name, CSRF: csrf, RemoteAddr: truncate(remote, 64),
		CreatedAt: now, ExpiresAt: now.Add(c.ttl)}
	st := c.s.store.With(ctx)
	if _, err := st.DeleteExpiredConsoleSessions(now); err != nil {
		c.s.log.WithError(err).Warn("expired console sessions not deleted")
	}
	if err := st.InsertConsoleSession(sess); err != nil {
		return nil, storeErr("sign-in", err)
	}
	a := Actor{User: u.Name, Role: u.Role, RemoteAddr: remote, RequestID: requestID}
	c.record(ctx, a, "sign_in", "", "", func(context.Context) (string, error) {
		return fmt.Sprintf("session until %s", sess.ExpiresAt.Format(time.RFC3339)), nil
	})
	return &Session{Token: token, User: u.Name, Role: u.Role, CSRF: csrf, ExpiresAt: sess.ExpiresAt}, nil
}

// checkPassword compares a password with the user's hash, a few at a time.
// The buckets are looked at again once its turn came (wait), so that a
// burst of guesses that queued here is refused rather than checked.
func (c *Console) checkPassword(ctx context.Context, u ConsoleUser, known bool, password string, wait func() time.Duration) (bool, error) {
	select {
	case c.bcrypts <- struct{}{}:
		defer func() { <-c.bcrypts }()
	case <-ctx.Done():
		return false, &Error{Code: EUnavailable, Message: "sign-in abandoned", Err: ctx.Err()}
	}
	if w := wait(); w > 0 {
		return false, &SignInLimited{Wait: w}
	}
	hash := []byte(u.PasswordHash)
	if !known {
		c.dummyOnce.Do(func() {
			cost := bcrypt.DefaultCost
			for _, u := range c.users {
				if n, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil {
					cost = n
					break
				}
			}
			c.dummy, _ = bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
		})
		hash = c.dummy
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && known, nil
}

// Session returns the signed-in user of a session token. The role is the
// one configured now, so that a user removed from the configuration is
// signed out with the next start. Returns EUnauthorized (no such session,
// expired, or its user no longer configured), EUnavailable.
func (c *Console) Session(ctx context.Context, token string) (*Session, error) {
	if !wellFormedToken(token) {
		return nil, errf(EUnauthorized, "", "not signed in")
	}
	row, err := c.s.store.With(ctx).ConsoleSession(tokenID(token), c.s.now())
	if errors.Is(err, model.ErrNotFound) {
		return nil, errf(EUnauthorized, "", "not signed in")
	}
	if err != nil {
		return nil, storeErr("session", err)
	}
	u, ok := c.users[row.UserName]
	if !ok {
		return nil, errf(EUnauthorized, "", "user %s is no longer configured", row.UserName)
	}
	return &Session{User: u.Name, Role: u.Role, CSRF: row.CSRF, ExpiresAt: row.ExpiresAt}, nil
}

// SignOut voids a session on every replica. Returns EUnavailable.
func (c *Console) SignOut(ctx context.Context, a Actor, token string) error {
	if !wellFormedToken(token) {
		return nil
	}
	_, err := c.record(ctx, a, "sign_out", "", "", func(ctx context.Context) (string, error) {
		if _, err := c.s.store.With(ctx).DeleteConsoleSession(tokenID(token)); err != nil {
			return "", storeErr("sign-out", err)
		}
		return "session ended", nil
	})
	return err
}

// newToken returns a random token for a cookie (256 bits, base64url) and
// the id it is stored under.
func newToken() (token, id string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, tokenID(token), nil
}

func tokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// wellFormedToken: what newToken makes, so that garbage never reaches the
// database.
func wellFormedToken(t string) bool {
	if len(t) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(t)
	return err == nil
}

// logUser names a user in the log only if it is one: people type their
// password into the name field now and then.
func logUser(name string, known bool) string {
	if known {
		return name
	}
	return "(unknown)"
}

// addrKey is the bucket of an address: the IP, or its /64 for IPv6, where
// one host has many addresses.
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return ip.String()
}

// signInLimits are the buckets of failed sign-ins, per user and per
// address, of this replica.
type signInLimits struct {
	mu    sync.Mutex
	users map[string]*rate.Limiter
	addrs map[string]*rate.Limiter
	// overflow is shared by the addresses that found the map full.
	overflow *rate.Limiter
}

func newSignInLimits() *signInLimits {
	return &signInLimits{users: map[string]*rate.Limiter{}, addrs: map[string]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Every(addrFailEvery), addrFailBurst)}
}

// wait says how long until both the user's and the address's buckets
// hold a failure's worth again; 0 when they do now.
func (l *signInLimits) wait(user, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	return max(untilOne(l.bucket(l.users, user, userFailEvery, userFailBurst, now), now),
		untilOne(l.bucket(l.addrs, addr, addrFailEvery, addrFailBurst, now), now))
}

// fail takes a failure's worth from both buckets.
func (l *signInLimits) fail(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.bucket(l.users, user, userFailEvery, userFailBurst, now).AllowN(now, 1)
	l.bucket(l.addrs, addr, addrFailEvery, addrFailBurst, now).AllowN(now, 1)
}

func untilOne(b *rate.Limiter, now time.Time) time.Duration {
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(b.Limit()) * float64(time.Second))
}

func (l *signInLimits) bucket(m map[string]*rate.Limiter, key string, every time.Duration, burst int, now time.Time) *rate.Limiter {
	if b, ok := m[key]; ok {
		return b
	}
	if len(m) >= maxLimiters {
		// A full bucket remembers no failure: dropping it changes nothing.
		for k, b := range m {
			if b.TokensAt(now) >= float64(burst) {
				delete(m, k)
			}
		}
		if len(m) >= maxLimiters {
			return l.overflow
		}
	}
	b := rate.NewLimiter(rate.Every(every), burst)
	m[key] = b
	return b
}
