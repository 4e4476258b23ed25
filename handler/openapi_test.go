package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/gin-gonic/gin"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/handler"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// openapiPath is the document the handler embeds and serves at /openapi.yaml.
const openapiPath = "openapi.yaml"

// openapiLoad loads and validates the document.
func openapiLoad(t testing.TB) (*openapi3.T, []byte) {
	t.Helper()
	raw, err := os.ReadFile(openapiPath)
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("load %s: %v", openapiPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("%s is not valid OpenAPI 3: %v", openapiPath, err)
	}
	return doc, raw
}

// ginParam turns gin's :param into OpenAPI's {param}.
var ginParam = regexp.MustCompile(`:([A-Za-z_][A-Za-z0-9_]*)`)

// openapiServer is the real server with no service behind it: enough to
// list its routes and serve the document, which touch no service.
func openapiServer(t testing.TB) http.Handler {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	return handler.NewServer(handler.Deps{Log: log, Tokens: []string{handlertest.Token}})
}

func TestOpenAPIDocument(t *testing.T) {
	doc, _ := openapiLoad(t)
	h := openapiServer(t)
	engine, ok := h.(*gin.Engine)
	if !ok {
		t.Fatalf("NewServer returned %T, not *gin.Engine", h)
	}

	registered := map[string]bool{}
	for _, r := range engine.Routes() {
		path := ginParam.ReplaceAllString(r.Path, "{$1}")
		registered[r.Method+" "+path] = true
		item := doc.Paths.Value(path)
		if item == nil || item.GetOperation(r.Method) == nil {
			t.Errorf("route %s %s is registered but not in %s", r.Method, path, openapiPath)
		}
	}
	if len(registered) < 20 {
		t.Fatalf("only %d routes registered", len(registered))
	}

	errorRef := "#/components/schemas/Error"
	for _, path := range doc.Paths.InMatchingOrder() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			name := method + " " + path
			if !registered[name] {
				t.Errorf("%s is documented but not registered", name)
				continue
			}
			// Path parameters are declared, on the path or the operation.
			for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(path, -1) {
				if item.Parameters.GetByInAndName("path", m[1]) == nil && op.Parameters.GetByInAndName("path", m[1]) == nil {
					t.Errorf("%s: path parameter %s is not declared", name, m[1])
				}
			}
			if !strings.HasPrefix(path, "/v1/") {
				if op.Security == nil || slices.ContainsFunc(*op.Security, func(r openapi3.SecurityRequirement) bool {
					_, bearer := r["bearer"]
					return bearer
				}) {
					t.Errorf("%s is not behind the bearer token but does not say so", name)
				}
				continue
			}
			// /v1: behind the bearer token, and every error in docs/api.md's shape.
			if op.Security != nil {
				t.Errorf("%s overrides the bearer security", name)
			}
			if op.Responses.Value("401") == nil {
				t.Errorf("%s does not document 401", name)
			}
			for status, ref := range op.Responses.Map() {
				if status[0] != '4' && status[0] != '5' {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Ref != errorRef {
					t.Errorf("%s: %s is not documented with the error shape", name, status)
				}
			}
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	_, raw := openapiLoad(t)
	srv := httptest.NewServer(openapiServer(t))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/openapi.yaml") // no token: the document is public
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, raw) {
		t.Fatalf("GET /openapi.yaml: %d, %d bytes (want the %d of the file)", resp.StatusCode, len(got), len(raw))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/yaml") {
		t.Errorf("Content-Type %q", ct)
	}
}

// openapiChecker sends requests to a test gateway and validates each
// answer (status, headers, body) against the document; requests meant to
// be valid are validated too.
type openapiChecker struct {
	doc  *openapi3.T
	g    *handlertest.Gateway
	seen map[string]bool // "METHOD path status" checked
}

var registerPDF sync.Once

func newOpenAPIChecker(t testing.TB, g *handlertest.Gateway) *openapiChecker {
	doc, _ := openapiLoad(t)
	registerPDF.Do(func() { openapi3filter.RegisterBodyDecoder("application/pdf", openapi3filter.FileBodyDecoder) })
	return &openapiChecker{doc: doc, g: g, seen: map[string]bool{}}
}

// check sends method template (with params filled in) and returns the
// status and body. body is JSON-marshalled unless it is []byte; ctype
// defaults to application/json.
func (c *openapiChecker) check(t testing.TB, method, template string, params map[string]string, query string,
	body any, ctype string, validRequest bool, header map[string]string) (int, []byte) {
	t.Helper()
	path := template
	for k, v := range params {
		path = strings.ReplaceAll(path, "{"+k+"}", v)
	}
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	if ctype == "" && body != nil {
		ctype = "application/json"
	}
	newReq := func(base string) *http.Request {
		u := base + path
		if query != "" {
			u += "?" + query
		}
		req, _ := http.NewRequestWithContext(context.Background(), method, u, bytes.NewReader(raw))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if strings.HasPrefix(template, "/v1/") {
			req.Header.Set("Authorization", "Bearer "+handlertest.Token)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		return req
	}
	resp, err := http.DefaultClient.Do(newReq(c.g.URL))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)

	item := c.doc.Paths.Value(template)
	if item == nil || item.GetOperation(method) == nil {
		t.Fatalf("%s %s is not documented", method, template)
	}
	route := &routers.Route{Spec: c.doc, Path: template, PathItem: item, Method: method, Operation: item.GetOperation(method)}
	in := &openapi3filter.RequestValidationInput{Request: newReq(""), PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if validRequest {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("%s %s: the request the gateway takes does not fit the document: %v", method, path, err)
		}
	}
	in.Request = newReq("") // the body was read by the request validation
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(got)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s answered %d, which does not fit the document: %v\n%s", method, path, resp.StatusCode, err, got)
	}
	c.seen[fmt.Sprintf("%s %s %d", method, template, resp.StatusCode)] = true
	return resp.StatusCode, got
}

// TestOpenAPIAnswers drives every /v1 route through its answers and checks
// each against openapi.yaml: the document describes what the gateway does.
func TestOpenAPIAnswers(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		in, other := newStubInst(t, "BANK01", 300*time.Millisecond), newStubInst(t, "BANK02", 300*time.Millisecond)
		in.set(epCost, stubAnswer{Data: map[string]any{"money": json.Number("150.5")}})
		other.set(epCost, stubAnswer{Mode: stubHang})
		g := apiStart(t, driver, in, other)
		c := newOpenAPIChecker(t, g)
		const (
			guarantees = "/v1/guarantees"
			order      = "/v1/guarantees/{orderno}"
		)
		no := func(orderNo string) map[string]string { return map[string]string{"orderno": orderNo} }
		id := func(id int64) map[string]string { return map[string]string{"id": fmt.Sprint(id)} }
		want := func(st int, body []byte, status int) {
			t.Helper()
			apiWant(t, st, body, status)
		}

		// Apply: 201, 200, 409, 400, 202, 502, 413, 401.
		app := apiApplication("BANK01", "OA1", "QY1", "XM-1", "BD-1")
		st, b := c.check(t, "POST", guarantees, nil, "", app, "", true, nil)
		want(st, b, 201)
		st, b = c.check(t, "POST", guarantees, nil, "", app, "", true, nil)
		want(st, b, 200)
		app2 := apiApplication("BANK01", "OA1", "QY1", "XM-1", "BD-1")
		app2["bzjmoney"] = "5.00"
		st, b = c.check(t, "POST", guarantees, nil, "", app2, "", true, nil)
		want(st, b, 409)
		bad := apiApplication("BANK01", "OA9", "QY9", "XM-1", "BD-1")
		bad["bzjmoney"] = "1.001"
		st, b = c.check(t, "POST", guarantees, nil, "", bad, "", false, nil)
		want(st, b, 400)
		in.set(epApply, stubAnswer{Mode: stubHang})
		st, b = c.check(t, "POST", guarantees, nil, "", apiApplication("BANK01", "OA2", "QY2", "XM-1", "BD-1"), "", true, nil)
		want(st, b, 202)
		in.set(epApply, stubAnswer{Mode: stubRefuse, Errcode: "E1", Msg: "拒绝"})
		st, b = c.check(t, "POST", guarantees, nil, "", apiApplication("BANK01", "OA3", "QY3", "XM-1", "BD-1"), "", true, nil)
		want(st, b, 502)
		in.set(epApply, stubAnswer{})
		st, b = c.check(t, "POST", guarantees, nil, "", bytes.Repeat([]byte(" "), 2<<20), "", false, nil)
		want(st, b, 413)

		// Read, list, refresh.
		st, b = c.check(t, "GET", order, no("OA1"), "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", order, no("NOSUCH"), "", nil, "", true, nil)
		want(st, b, 404)
		st, b = c.check(t, "GET", guarantees, nil, "limit=1&orgcode=BANK01", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", guarantees, nil, "status=lost", nil, "", false, nil)
		want(st, b, 400)
		st, b = c.check(t, "POST", order+"/refresh", no("OA1"), "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "POST", order+"/refresh", no("OA2"), "", nil, "", true, nil)
		want(st, b, 409)
		in.set(epQuery, stubAnswer{Mode: stubRefuse, Errcode: "E2", Msg: "查询失败"})
		st, b = c.check(t, "POST", order+"/refresh", no("OA1"), "", nil, "", true, nil)
		want(st, b, 502)

		// Issue OA1, then file, cancel and events.
		pdf := stubPDF("openapi", 8<<10)
		apiNotify(t, g, "BANK01", "OA1", "BH-OA1", pdf)
		st, b = c.check(t, "GET", order, no("OA1"), "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", order+"/file", no("OA1"), "", nil, "", true, nil)
		want(st, b, 200)
		etag := `"` + apiGet(t, g, "OA1").File.Sha256 + `"`
		st, b = c.check(t, "GET", order+"/file", no("OA1"), "", nil, "", true, map[string]string{"If-None-Match": etag})
		want(st, b, 304)
		st, b = c.check(t, "GET", order+"/file", no("OA2"), "", nil, "", true, nil)
		want(st, b, 409)
		apiProcessing(t, g, in, "OA4", "QY4", "BD-1")
		apiNotify(t, g, "BANK01", "OA4", "BH-OA4", nil)
		in.set(epPull, stubAnswer{Mode: stubRefuse, Errcode: "E3", Msg: "无文件"})
		st, b = c.check(t, "GET", order+"/file", no("OA4"), "", nil, "", true, nil)
		want(st, b, 502)
		in.set(epCancel, stubAnswer{Mode: stubRefuse, Errcode: "E4", Msg: "不可注销"})
		st, b = c.check(t, "POST", order+"/cancel", no("OA4"), "", nil, "", true, nil)
		want(st, b, 502)
		in.set(epCancel, stubAnswer{})
		st, b = c.check(t, "POST", order+"/cancel", no("OA1"), "", nil, "", true, nil)
		want(st, b, 202)
		st, b = c.check(t, "POST", order+"/cancel", no("OA1"), "", nil, "", true, nil)
		want(st, b, 409)
		st, b = c.check(t, "POST", order+"/cancel", no("NOSUCH"), "", nil, "", true, nil)
		want(st, b, 404)
		st, b = c.check(t, "GET", order+"/events", no("OA1"), "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", order+"/events", no("NOSUCH"), "", nil, "", true, nil)
		want(st, b, 404)

		// Fee estimates.
		st, b = c.check(t, "POST", "/v1/cost", nil, "", map[string]any{"orgcode": "BANK01", "bzjmoney": "100000"}, "", true, nil)
		want(st, b, 200)
		in.set(epCost, stubAnswer{Data: map[string]any{"describe": "请联系客户经理"}})
		st, b = c.check(t, "POST", "/v1/cost", nil, "", map[string]any{"orgcode": "BANK01", "bzjmoney": 100000}, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "POST", "/v1/cost", nil, "", map[string]any{"orgcode": "BANK02", "bzjmoney": 100000}, "", true, nil)
		want(st, b, 502)
		st, b = c.check(t, "POST", "/v1/cost", nil, "", map[string]any{"orgcode": "NOBANK", "bzjmoney": 1}, "", true, nil)
		want(st, b, 400)
		st, b = c.check(t, "GET", "/v1/quotes", nil, "bzjmoney=100000", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", "/v1/quotes", nil, "bzjmoney=x", nil, "", false, nil)
		want(st, b, 400)

		// Project states and deliveries.
		other.set(epXMState, stubAnswer{Mode: stubRefuse, Errcode: "E5", Msg: "维护"})
		apiProcessing(t, g, other, "OA5", "QY5", "BD-1")
		st, b = c.check(t, "POST", "/v1/projects/state", nil, "", apiProjectState("XM-1", "BD-1", "2"), "", true, nil)
		want(st, b, 202)
		p := apiDecode[apiPush](t, b)
		st, b = c.check(t, "POST", "/v1/projects/state", nil, "", apiProjectState("XM-1", "BD-1", 3), "", true, nil)
		want(st, b, 202)
		st, b = c.check(t, "POST", "/v1/projects/state", nil, "", apiProjectState("XM-1", "BD-1", "9"), "", false, nil)
		want(st, b, 400)
		st, b = c.check(t, "GET", "/v1/projects/state/{id}", id(p.ID), "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", "/v1/projects/state/{id}", id(999999), "", nil, "", true, nil)
		want(st, b, 404)
		st, b = c.check(t, "POST", "/v1/deliveries/{id}/retry", id(p.Deliveries[0].ID), "", nil, "", true, nil)
		want(st, b, 409)
		st, b = c.check(t, "POST", "/v1/deliveries/{id}/retry", id(999999), "", nil, "", true, nil)
		want(st, b, 404)
		// As the redelivery job leaves a delivery that ran out of attempts.
		modeltest.Exec(t, g.Store, "UPDATE deliveries SET status = ? WHERE id = ?", model.DeliveryDead, p.Deliveries[1].ID)
		st, b = c.check(t, "POST", "/v1/deliveries/{id}/retry", id(p.Deliveries[1].ID), "", nil, "", true, nil)
		want(st, b, 202)

		// 验真, reconciliation, institutions.
		st, b = c.check(t, "POST", "/v1/verify", nil, "", pdf, "application/pdf", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "POST", "/v1/verify", nil, "", map[string]string{"sha256": strings.Repeat("0", 64)}, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "POST", "/v1/verify", nil, "", map[string]string{"sha256": "x"}, "", false, nil)
		want(st, b, 400)
		st, b = c.check(t, "GET", "/v1/reconciliation", nil, "date=2025-03-01", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", "/v1/reconciliation", nil, "date=2025-02-30", nil, "", false, nil)
		want(st, b, 400)
		st, b = c.check(t, "GET", "/v1/institutions", nil, "", nil, "", true, nil)
		want(st, b, 200)

		// A callback and the operations endpoints.
		plain, _ := json.Marshal(map[string]any{"bhno": "BH-OA1", "state": "1"})
		ct, err := g.Cipher("BANK01").Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		env, _ := json.Marshal(wire.Request{Data: string(ct)})
		st, b = c.check(t, "POST", "/api/guarantee/release", nil, "", env, "", true, map[string]string{"appKey": in.Spec.AppKey})
		want(st, b, 200)
		st, b = c.check(t, "POST", "/api/guarantee/release", nil, "", env, "", false, map[string]string{"appKey": "nobody"})
		want(st, b, 200)
		st, b = c.check(t, "GET", "/healthz", nil, "", nil, "", true, nil)
		want(st, b, 200)
		st, b = c.check(t, "GET", "/readyz", nil, "", nil, "", true, nil)
		want(st, b, 200)

		// Without the token, every /v1 route answers the documented 401.
		for _, r := range apiRoutes(t, g) {
			if !strings.HasPrefix(r.Path, "/v1/") {
				continue
			}
			template := ginParam.ReplaceAllString(r.Path, "{$1}")
			req, _ := http.NewRequest(r.Method, g.URL+strings.NewReplacer(":orderno", "X", ":id", "1").Replace(r.Path), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			item := c.doc.Paths.Value(template)
			route := &routers.Route{Spec: c.doc, Path: template, PathItem: item, Method: r.Method, Operation: item.GetOperation(r.Method)}
			err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
				RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, Route: route},
				Status:                 resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(got)),
				Options: &openapi3filter.Options{IncludeResponseStatus: true}})
			if resp.StatusCode != 401 || err != nil {
				t.Errorf("%s %s without a token: %d %v", r.Method, r.Path, resp.StatusCode, err)
			}
		}

		// Every /v1 route was driven through at least one answer.
		for _, r := range apiRoutes(t, g) {
			template := ginParam.ReplaceAllString(r.Path, "{$1}")
			if !strings.HasPrefix(template, "/v1/") {
				continue
			}
			found := false
			for k := range c.seen {
				found = found || strings.HasPrefix(k, r.Method+" "+template+" ")
			}
			if !found {
				t.Errorf("%s %s was not checked against the document", r.Method, template)
			}
		}
	})
}
