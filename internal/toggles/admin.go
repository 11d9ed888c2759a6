package toggles

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/strangler-fig/strangler/internal/guard"
	"github.com/strangler-fig/strangler/internal/ramp"
)

// FlagView is a flag as the admin API shows it: the flags file's fields
// under the same names, with enabled spelled out and empty user lists as
// [].
type FlagView struct {
	Key                string             `json:"key"`
	Enabled            bool               `json:"enabled"`
	Percentage         float64            `json:"percentage"`
	IncludeUsers       []string           `json:"include_users"`
	ExcludeUsers       []string           `json:"exclude_users"`
	Segments           []string           `json:"segments,omitempty"`
	SegmentPercentages map[string]float64 `json:"segment_percentages,omitempty"`
	Guard              *guard.Config      `json:"guard,omitempty"`
	Ramp               *ramp.Config       `json:"ramp,omitempty"`
	// State is what AdminOptions.State adds: the guard's and the ramp's
	// progress.
	State *RunState `json:"state,omitempty"`
}

// RunState is a flag's run-time state beside its flags file entry: its
// guard (tripped or holding, and why) and its ramp (stepping, stopped or
// done).
type RunState struct {
	// Guard is the guard's state; nil for a flag without a guard.
	Guard *guard.State `json:"guard,omitempty"`
	// GuardSummary is Guard in one line, e.g. "tripped at ...: error rate
	// 0.5 > 0.1 over 1s (20 requests)".
	GuardSummary string `json:"guard_summary,omitempty"`
	// Ramp is the ramp's shared state; nil before a ramp or trip touched
	// the flag.
	Ramp *ramp.FlagState `json:"ramp,omitempty"`
}

// FlagList is the answer of GET /admin/flags.
type FlagList struct {
	Flags []FlagView `json:"flags"` // by key
}

// APIError is the body of every admin API error answer.
type APIError struct {
	// Error says what went wrong and what to do.
	Error string `json:"error"`
	// Field is the request field at fault, when there is one.
	Field string `json:"field,omitempty"`
	// Problems lists every validation problem of a refused change.
	Problems []string `json:"problems,omitempty"`
}

// ViewOf returns the admin API view of a flag.
func ViewOf(key string, f Flag) FlagView {
	f = f.Clone()
	v := FlagView{
		Key: key, Enabled: f.IsEnabled(), Percentage: f.Percentage,
		IncludeUsers: f.IncludeUsers, ExcludeUsers: f.ExcludeUsers,
		Segments: f.Segments, SegmentPercentages: f.SegmentPercentages,
		Guard: f.Guard, Ramp: f.Ramp,
	}
	if v.IncludeUsers == nil {
		v.IncludeUsers = []string{}
	}
	if v.ExcludeUsers == nil {
		v.ExcludeUsers = []string{}
	}
	return v
}

// AdminOptions configures the admin handler.
type AdminOptions struct {
	// Actor names who made a change, for the audit line. Nil means the
	// request's remote address. Authentication is the admin listener's
	// job; the handler trusts every request it is given.
	Actor func(*http.Request) string
	// Logger receives unexpected errors. Nil discards.
	Logger *slog.Logger
	// State, when set, adds run-time state to a flag's view (GET of one
	// flag and PUT answers), e.g. its guard and ramp progress.
	State func(key string) *RunState
}

// maxPatchBody bounds a PUT body.
const maxPatchBody = 64 << 10

// NewAdminHandler serves the flag part of the admin API over store:
//
//	GET /admin/flags        every flag, as FlagList
//	GET /admin/flags/{key}  one flag, as FlagView; 404 if unknown
//	PUT /admin/flags/{key}  a JSON body with any of percentage, enabled,
//	                        include_users, exclude_users; answers the flag
//	                        as now in force, 400 naming the field on bad
//	                        input, 404 for an unknown flag, 409 while the
//	                        file on disk is invalid
//
// GET of one flag and PUT answers carry the flags' revision as ETag; a PUT
// with If-Match of another revision changes nothing and answers 409, so a
// client that read a flag never overwrites a newer change. In
// fleet mode a PUT answers 503 while the shared store is unreachable.
//
// Errors are APIError bodies.
func NewAdminHandler(store *Store, opts AdminOptions) http.Handler {
	a := &admin{store: store, actor: opts.Actor, log: opts.Logger, state: opts.State}
	if a.actor == nil {
		a.actor = func(r *http.Request) string { return r.RemoteAddr }
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/flags", a.list)
	mux.HandleFunc("GET /admin/flags/{key}", a.get)
	mux.HandleFunc("PUT /admin/flags/{key}", a.put)
	return mux
}

type admin struct {
	store *Store
	actor func(*http.Request) string
	log   *slog.Logger
	state func(string) *RunState
}

// View is ViewOf with the run-time state of AdminOptions.State added.
func (o AdminOptions) View(key string, f Flag) FlagView {
	v := ViewOf(key, f)
	if o.State != nil {
		v.State = o.State(key)
	}
	return v
}

// view is ViewOf with the run-time state added.
func (a *admin) view(key string, f Flag) FlagView {
	v := ViewOf(key, f)
	if a.state != nil {
		v.State = a.state(key)
	}
	return v
}

func (a *admin) list(w http.ResponseWriter, _ *http.Request) {
	snap := a.store.Snapshot()
	out := FlagList{Flags: []FlagView{}}
	for _, key := range snap.FlagKeys() {
		f, _ := snap.Flag(key)
		out.Flags = append(out.Flags, ViewOf(key, f))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	snap := a.store.Snapshot()
	f, ok := snap.Flag(key)
	if !ok {
		writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("flag %q is not in the flags file", key)})
		return
	}
	w.Header().Set("ETag", ETag(snap.Revision()))
	writeJSON(w, http.StatusOK, a.view(key, f))
}

func (a *admin) put(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	var p Patch
	if e := decodePatch(http.MaxBytesReader(w, r.Body, maxPatchBody), &p); e != nil {
		writeJSON(w, http.StatusBadRequest, e)
		return
	}
	ifRev, perr := parseIfMatch(r.Header.Get("If-Match"))
	if perr != nil {
		writeJSON(w, http.StatusBadRequest, APIError{Error: perr.Error(), Field: "If-Match"})
		return
	}
	f, err := a.store.UpdateIf(key, p, a.actor(r), ifRev)
	var verr *ValidationError
	switch {
	case errors.Is(err, ErrRevisionMismatch):
		w.Header().Set("ETag", ETag(a.store.Snapshot().Revision()))
		writeJSON(w, http.StatusConflict, APIError{Error: fmt.Sprintf("flag %q: %v: read it again (its ETag is the revision now in force) and retry", key, err)})
	case errors.Is(err, ErrStoreUnavailable):
		a.log.Warn("admin flag update refused: flags store unreachable", "flag", key, "err", err)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, APIError{Error: "the shared flags store (PostgreSQL) is unreachable: nothing was changed; the proxy keeps serving the flags it last read; retry when the store is back (" + err.Error() + ")"})
	case errors.Is(err, ErrFileInvalid):
		writeJSON(w, http.StatusConflict, APIError{Error: err.Error()})
	case errors.Is(err, ErrFlagNotFound):
		writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("flag %q is not in the flags file: add it there first", key)})
	case errors.As(err, &verr):
		writeJSON(w, http.StatusBadRequest, validationAPIError(key, verr))
	case err != nil:
		a.log.Error("admin flag update failed", "flag", key, "err", err)
		writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error()})
	default:
		w.Header().Set("ETag", ETag(a.store.Snapshot().Revision()))
		writeJSON(w, http.StatusOK, a.view(key, f))
	}
}

// ETag is the ETag header value of a revision: the number, quoted.
func ETag(revision int64) string { return `"` + strconv.FormatInt(revision, 10) + `"` }

// parseIfMatch reads an If-Match header: empty or * means any revision
// (0), else one quoted revision as ETag writes it.
func parseIfMatch(h string) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return 0, nil
	}
	v := strings.TrimPrefix(h, "W/")
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return 0, fmt.Errorf("If-Match %q is not an ETag: send the ETag of GET /admin/flags/{key}, e.g. \"42\"", h)
	}
	n, err := strconv.ParseInt(v[1:len(v)-1], 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("If-Match %q is not a revision this proxy gave: send the ETag of GET /admin/flags/{key}, e.g. \"42\"", h)
	}
	return n, nil
}

// patchFields lists the fields a PUT may set, for messages.
const patchFields = "percentage, enabled, include_users, exclude_users"

// isPatchField reports whether a PUT may set the field.
func isPatchField(f string) bool {
	switch f {
	case "percentage", "enabled", "include_users", "exclude_users":
		return true
	}
	return false
}

func decodePatch(body io.Reader, p *Patch) *APIError {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(p)
	var typeErr *json.UnmarshalTypeError
	var maxErr *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return &APIError{Error: "empty body: send a JSON object with any of " + patchFields}
	case errors.As(err, &typeErr):
		return &APIError{Error: fmt.Sprintf("%s: want %s, got a JSON %s", typeErr.Field, wantType(typeErr.Field), typeErr.Value), Field: typeErr.Field}
	case errors.As(err, &maxErr):
		return &APIError{Error: fmt.Sprintf("body is larger than %d bytes", maxErr.Limit)}
	case err != nil && strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &APIError{Error: fmt.Sprintf("%s: unknown field; the fields are %s", field, patchFields), Field: field}
	case err != nil:
		return &APIError{Error: "body is not a JSON object: " + err.Error()}
	case dec.More():
		return &APIError{Error: "body has more than one JSON value"}
	case p.Percentage == nil && p.Enabled == nil && p.IncludeUsers == nil && p.ExcludeUsers == nil:
		return &APIError{Error: "nothing to change: set any of " + patchFields}
	}
	return nil
}

func wantType(field string) string {
	switch field {
	case "percentage":
		return "a number from 0 to 100"
	case "enabled":
		return "true or false"
	}
	return "a list of user ids"
}

// validationAPIError turns a refused change into a 400 body whose field is
// the first problem's field within the flag (percentage, include_users...).
func validationAPIError(key string, verr *ValidationError) APIError {
	out := APIError{Error: verr.Problems[0].String()}
	prefix := "flags." + key + "."
	for _, p := range verr.Problems {
		out.Problems = append(out.Problems, p.String())
	}
	if rest, ok := strings.CutPrefix(verr.Problems[0].Path, prefix); ok {
		field, _, _ := strings.Cut(rest, "[")
		field, _, _ = strings.Cut(field, ".")
		if isPatchField(field) {
			out.Field = field
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a failed write has no one to tell
}
