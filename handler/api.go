package handler

import (
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/procurement/gateway/service"
)

// maxAPIBody bounds the bidding module's JSON bodies; /v1/verify takes a
// PDF and has its own bound.
const (
	maxAPIBody    = 1 << 20
	maxVerifyBody = 32 << 20
)

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// apiStatus maps service error codes to HTTP, in one place.
func apiStatus(code string) int {
	switch code {
	case service.EInvalid:
		return http.StatusBadRequest
	case service.EUnauthorized:
		return http.StatusUnauthorized
	case service.ENotFound:
		return http.StatusNotFound
	case service.EConflict:
		return http.StatusConflict
	case service.EUpstream:
		return http.StatusBadGateway
	case service.EUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fail writes the error shape of docs/api.md. Internal causes are logged, and
// the caller is told only what it can act on.
func (s *server) fail(c *gin.Context, err error) {
	var e *service.Error
	if !errors.As(err, &e) {
		e = &service.Error{Code: service.EInternal, Err: err}
	}
	status := apiStatus(e.Code)
	msg := e.Message
	if status == http.StatusInternalServerError {
		msg = "internal error"
	}
	entry := s.logger(c).WithFields(map[string]any{"code": e.Code, "status": status})
	if e.Err != nil {
		entry = entry.WithError(e.Err)
	}
	if status >= 500 {
		entry.Error(msg)
	} else {
		entry.Info(msg)
	}
	c.AbortWithStatusJSON(status, apiError{Error: apiErrorBody{Code: e.Code, Message: msg, Field: e.Field}})
}

func (s *server) notFound(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusNotFound, apiError{Error: apiErrorBody{Code: service.ENotFound, Message: "no such route"}})
}

// body reads the request's body within limit, after holding its room in
// the memory budget (docs/decisions.md §35) until the request is answered
// (releaseBody). A body declared over the limit is refused unread (413);
// one that finds no room within a second is answered 503 with
// Retry-After, dropped as it comes.
func (s *server) body(c *gin.Context, limit int64) ([]byte, bool) {
	size := c.Request.ContentLength
	if size > limit {
		c.Header("Connection", "close")
		c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge, apiError{Error: apiErrorBody{Code: service.EInvalid, Message: "body too large"}})
		return nil, false
	}
	if size < 0 {
		size = limit // undeclared: it may be as large as the limit
	}
	release, ok := s.Service.ReserveBody(c.Request.Context(), "api", size)
	if !ok {
		// Read and dropped, which costs no memory, so that the client
		// gets the answer rather than a reset mid-upload.
		io.Copy(io.Discard, http.MaxBytesReader(c.Writer, c.Request.Body, limit))
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(service.BodyRetryAfter().Seconds()))))
		c.Header("Connection", "close")
		s.fail(c, &service.Error{Code: service.EUnavailable, Message: "too many large request bodies in flight, retry later"})
		return nil, false
	}
	c.Set(bodyReleaseKey, release)
	b, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge, apiError{Error: apiErrorBody{Code: service.EInvalid, Message: "body too large"}})
		} else {
			s.fail(c, &service.Error{Code: service.EInvalid, Message: "body could not be read"})
		}
		return nil, false
	}
	return b, true
}

// bodyReleaseKey holds, in a request's context, the release of its room in
// the memory budget.
const bodyReleaseKey = "body_release"

// releaseBody gives a request's room in the memory budget back once the
// request is answered: its body is worked on until then.
func (s *server) releaseBody(c *gin.Context) {
	c.Next()
	if r, ok := c.Get(bodyReleaseKey); ok {
		r.(func())()
	}
}

func (s *server) apply(c *gin.Context) {
	b, ok := s.body(c, maxAPIBody)
	if !ok {
		return
	}
	v, st, err := s.Service.Apply(c.Request.Context(), b)
	if err != nil {
		s.fail(c, err)
		return
	}
	switch st {
	case service.ApplyAccepted:
		c.Header("Location", "/v1/guarantees/"+url.PathEscape(v.OrderNo))
		c.JSON(http.StatusCreated, v)
	case service.ApplyUnconfirmed:
		c.Header("Location", "/v1/guarantees/"+url.PathEscape(v.OrderNo))
		c.JSON(http.StatusAccepted, v)
	default:
		c.JSON(http.StatusOK, v)
	}
}

func (s *server) get(c *gin.Context) {
	v, err := s.Service.View(c.Request.Context(), c.Param("orderno"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *server) list(c *gin.Context) {
	limit := 0
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			s.fail(c, &service.Error{Code: service.EInvalid, Field: "limit", Message: "limit must be a number"})
			return
		}
		limit = n
	}
	page, err := s.Service.List(c.Request.Context(), service.ListQuery{ProjectCode: c.Query("xmcode"), LotCode: c.Query("bdcode"),
		Status: c.Query("status"), OrgCode: c.Query("orgcode"), ApplicantCode: c.Query("qycode"), Flag: c.Query("flag"),
		Limit: limit, Cursor: c.Query("cursor")})
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, page)
}

func (s *server) refresh(c *gin.Context) {
	v, err := s.Service.Refresh(c.Request.Context(), c.Param("orderno"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *server) file(c *gin.Context) {
	f, err := s.Service.File(c.Request.Context(), c.Param("orderno"))
	if err != nil {
		s.fail(c, err)
		return
	}
	etag := `"` + f.Sha256 + `"`
	c.Header("ETag", etag)
	c.Header("Cache-Control", "private, max-age=0")
	if etagMatches(c.GetHeader("If-None-Match"), etag) {
		c.Status(http.StatusNotModified)
		return
	}
	c.Header("Content-Disposition", attachment(f.OrderNo+".pdf"))
	c.Data(http.StatusOK, "application/pdf", f.Content)
}

// attachment is the Content-Disposition of a file download (RFC 6266):
// the name quoted and escaped as a header parameter wants, and written as
// filename* (RFC 8187, UTF-8) when it is not ASCII. An orderno stored
// before its form was checked cannot break out of the header this way.
func attachment(name string) string {
	if v := mime.FormatMediaType("attachment", map[string]string{"filename": name}); v != "" {
		return v
	}
	return "attachment" // a name no encoding can carry (a control character): none
}

// etagMatches reads If-None-Match: "*", or a list of entity tags, weak ones
// compared by their opaque part (RFC 9110 §13.1.2).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

func (s *server) cancel(c *gin.Context) {
	v, err := s.Service.Cancel(c.Request.Context(), c.Param("orderno"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, v)
}

func (s *server) events(c *gin.Context) {
	evs, err := s.Service.Events(c.Request.Context(), c.Param("orderno"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": evs})
}

func (s *server) cost(c *gin.Context) {
	b, ok := s.body(c, maxAPIBody)
	if !ok {
		return
	}
	q, err := s.Service.Cost(c.Request.Context(), b)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, q)
}

func (s *server) quotes(c *gin.Context) {
	items, err := s.Service.Quotes(c.Request.Context(), c.Query("bzjmoney"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
}

func (s *server) pushProjectState(c *gin.Context) {
	b, ok := s.body(c, maxAPIBody)
	if !ok {
		return
	}
	v, err := s.Service.PushProjectState(c.Request.Context(), b)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, v)
}

func (s *server) idParam(c *gin.Context) (int64, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(c, &service.Error{Code: service.ENotFound, Message: "no such id"})
		return 0, false
	}
	return id, true
}

func (s *server) projectState(c *gin.Context) {
	id, ok := s.idParam(c)
	if !ok {
		return
	}
	v, err := s.Service.ProjectStateStatus(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *server) retryDelivery(c *gin.Context) {
	id, ok := s.idParam(c)
	if !ok {
		return
	}
	v, err := s.Service.RetryDelivery(c.Request.Context(), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, v)
}

func (s *server) verify(c *gin.Context) {
	b, ok := s.body(c, maxVerifyBody)
	if !ok {
		return
	}
	v, err := s.Service.Verify(c.Request.Context(), b)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v)
}

func (s *server) reconciliation(c *gin.Context) {
	date := c.Query("date")
	if date == "" {
		date = time.Now().UTC().Format(time.DateOnly)
	}
	items, err := s.Service.Findings(c.Request.Context(), date)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"date": date, "items": items})
}

func (s *server) institutions(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"items": s.Service.InstitutionList()})
}
