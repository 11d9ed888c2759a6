package toggles

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// adminServer serves the admin handler over a real store on a temp file.
func adminServer(tb testing.TB, content string, opts StoreOptions) (*httptest.Server, *Store) {
	tb.Helper()
	s := openStore(tb, content, opts)
	srv := httptest.NewServer(NewAdminHandler(s, AdminOptions{}))
	tb.Cleanup(srv.Close)
	return srv, s
}

// do sends a request and decodes a JSON answer into out.
func do(tb testing.TB, method, url, body string, out any) int {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if got := resp.Header.Get("Content-Type"); got != "application/json" && resp.StatusCode != http.StatusMethodNotAllowed {
		tb.Fatalf("Content-Type: got %q, want application/json", got)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("decode %s: %v", data, err)
		}
	}
	return resp.StatusCode
}

func TestAdminGet(t *testing.T) {
	srv, _ := adminServer(t, designFlags+"  other: {percentage: 3, enabled: false}\n", StoreOptions{})
	var list FlagList
	if code := do(t, http.MethodGet, srv.URL+"/admin/flags", "", &list); code != http.StatusOK {
		t.Fatalf("GET /admin/flags: got %d, want 200", code)
	}
	if len(list.Flags) != 2 || list.Flags[0].Key != "other" || list.Flags[1].Key != "users-migration" {
		t.Fatalf("flags: got %+v, want other and users-migration in order", list.Flags)
	}
	if list.Flags[0].Enabled || list.Flags[0].Percentage != 3 {
		t.Fatalf("other: got %+v, want disabled at 3", list.Flags[0])
	}
	var one FlagView
	if code := do(t, http.MethodGet, srv.URL+"/admin/flags/users-migration", "", &one); code != http.StatusOK {
		t.Fatalf("GET one: got %d, want 200", code)
	}
	if one.Percentage != 25 || one.Guard == nil || one.Guard.MinRequests != 50 || one.SegmentPercentages["employees"] != 100 {
		t.Fatalf("users-migration: got %+v, want the file's flag", one)
	}
	var e APIError
	if code := do(t, http.MethodGet, srv.URL+"/admin/flags/nope", "", &e); code != http.StatusNotFound || !strings.Contains(e.Error, "nope") {
		t.Fatalf("GET unknown: got %d %+v, want 404 naming the flag", code, e)
	}
}

func TestAdminPut(t *testing.T) {
	tests := []struct {
		name      string
		key, body string
		wantCode  int
		wantField string
		wantPct   float64
	}{
		{"percentage", "users-migration", `{"percentage": 60}`, 200, "", 60},
		{"enable and lists", "users-migration", `{"enabled": true, "include_users": ["a"], "exclude_users": ["b"]}`, 200, "", 25},
		{"out of range", "users-migration", `{"percentage": 150}`, 400, "percentage", 25},
		{"three decimals", "users-migration", `{"percentage": 1.234}`, 400, "percentage", 25},
		{"wrong type", "users-migration", `{"percentage": "fifty"}`, 400, "percentage", 25},
		{"enabled not a bool", "users-migration", `{"enabled": "yes"}`, 400, "enabled", 25},
		{"unknown field", "users-migration", `{"percent": 5}`, 400, "percent", 25},
		{"user in both lists", "users-migration", `{"exclude_users": ["u-qa-1"]}`, 400, "include_users", 25},
		{"empty object", "users-migration", `{}`, 400, "", 25},
		{"not JSON", "users-migration", `percentage=5`, 400, "", 25},
		{"unknown flag", "nope", `{"percentage": 5}`, 404, "", 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var audits []AuditEvent
			srv, s := adminServer(t, designFlags, StoreOptions{Audit: func(e AuditEvent) { audits = append(audits, e) }})
			var body map[string]any
			code := do(t, http.MethodPut, srv.URL+"/admin/flags/"+tt.key, tt.body, &body)
			if code != tt.wantCode {
				t.Fatalf("PUT: got %d %v, want %d", code, body, tt.wantCode)
			}
			if code != http.StatusOK {
				if got, _ := body["field"].(string); got != tt.wantField {
					t.Fatalf("field: got %q (%v), want %q", got, body, tt.wantField)
				}
				if msg, _ := body["error"].(string); msg == "" {
					t.Fatalf("error message: got none, want one")
				}
				if len(audits) != 0 {
					t.Fatalf("audit events for a refused change: got %d, want 0", len(audits))
				}
			} else {
				if got := body["percentage"]; got != tt.wantPct {
					t.Fatalf("answered percentage: got %v, want %v", got, tt.wantPct)
				}
				if len(audits) != 1 || !strings.HasPrefix(audits[0].Actor, "127.0.0.1:") {
					t.Fatalf("audit: got %+v, want one change by 127.0.0.1", audits)
				}
			}
			if f, _ := s.Snapshot().Flag("users-migration"); f.Percentage != tt.wantPct {
				t.Fatalf("percentage in force: got %v, want %v", f.Percentage, tt.wantPct)
			}
		})
	}
}

func TestAdminStateAndActor(t *testing.T) {
	var audits []AuditEvent
	s := openStore(t, designFlags, StoreOptions{Audit: func(e AuditEvent) { audits = append(audits, e) }})
	srv := httptest.NewServer(NewAdminHandler(s, AdminOptions{
		Actor: func(r *http.Request) string { return "token-holder@" + r.Header.Get("X-Forwarded-For") },
		State: func(key string) *RunState { return &RunState{GuardSummary: "holding " + key} },
	}))
	t.Cleanup(srv.Close)
	var one FlagView
	if code := do(t, http.MethodGet, srv.URL+"/admin/flags/users-migration", "", &one); code != http.StatusOK {
		t.Fatalf("GET: got %d, want 200", code)
	}
	if st := one.State; st == nil || st.GuardSummary != "holding users-migration" {
		t.Fatalf("state: got %v, want the State hook's answer", one.State)
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/admin/flags/users-migration", strings.NewReader(`{"percentage": 5}`))
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(audits) != 1 || audits[0].Actor != "token-holder@10.1.2.3" {
		t.Fatalf("audit: got %+v, want one change by token-holder@10.1.2.3", audits)
	}
}

func TestAdminPutOverAnInvalidFileOnDisk(t *testing.T) {
	srv, s := adminServer(t, designFlags, StoreOptions{})
	replaceFile(t, s.Path(), "flags:\n  users-migration: {percentage: 900}\n")
	var e APIError
	if code := do(t, http.MethodPut, srv.URL+"/admin/flags/users-migration", `{"percentage": 5}`, &e); code != http.StatusConflict {
		t.Fatalf("PUT: got %d %+v, want 409", code, e)
	}
	if !strings.Contains(e.Error, "flags file on disk is invalid") || !strings.Contains(e.Error, "900 is out of range") {
		t.Fatalf("error: got %q, want it to say the file on disk is invalid and why", e.Error)
	}
	if data, _ := os.ReadFile(s.Path()); !strings.Contains(string(data), "900") {
		t.Fatalf("file: got %q, want the operator's edit left for them to fix", data)
	}
}

func TestAdminMethodNotAllowed(t *testing.T) {
	srv, _ := adminServer(t, designFlags, StoreOptions{})
	if code := do(t, http.MethodDelete, srv.URL+"/admin/flags/users-migration", "", nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: got %d, want 405", code)
	}
}
