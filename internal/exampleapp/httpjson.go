package exampleapp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// Pagination limits of the list endpoints.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// maxBodyBytes bounds request bodies; the example resources are tiny.
const maxBodyBytes = 1 << 20

// Page is a keyset page request: up to Limit rows with id greater than After.
type Page struct {
	// Limit is the most rows to return, 1 to MaxLimit.
	Limit int
	// After is the id the page starts after; 0 for the first page.
	After int64
}

// ListResponse is the body of a list answer. NextAfter is the value to pass
// as ?after= for the next page, or nil on the last page.
type ListResponse[T any] struct {
	// Items are the page's rows in id order, never null.
	Items []T `json:"items"`
	// NextAfter is the next page's ?after=, null on the last page.
	NextAfter *int64 `json:"next_after"`
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// WriteJSON writes v as a JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// WriteError answers with the status that fits err: 400 for a *FieldError,
// 404 for ErrNotFound, 409 for a *ConflictError, 413 for a body over the
// limit, 500 (logged, with a generic message) for anything else.
func WriteError(w http.ResponseWriter, logger *slog.Logger, err error) {
	var (
		fe *FieldError
		ce *ConflictError
		me *http.MaxBytesError
	)
	switch {
	case errors.As(err, &fe):
		WriteJSON(w, http.StatusBadRequest, errorBody{Error: fe.Error(), Field: fe.Field})
	case errors.As(err, &ce):
		WriteJSON(w, http.StatusConflict, errorBody{Error: ce.Error(), Field: ce.Field})
	case errors.Is(err, ErrNotFound):
		WriteJSON(w, http.StatusNotFound, errorBody{Error: "not found"})
	case errors.As(err, &me):
		WriteJSON(w, http.StatusRequestEntityTooLarge,
			errorBody{Error: fmt.Sprintf("request body is larger than %d bytes", me.Limit)})
	default:
		logger.Error("request failed", "err", err)
		WriteJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
	}
}

// DecodeJSON reads one JSON object from the request body into dst. Malformed
// JSON and values of the wrong type are *FieldError values naming the field
// ("body" when no single field is at fault).
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("body", "must hold a single JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		maxErr    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &maxErr):
		return err
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return invalid(typeErr.Field, "must be a JSON %s, got %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &typeErr):
		return invalid("body", "must be a JSON object, got %s", typeErr.Value)
	case errors.As(err, &syntaxErr):
		return invalid("body", "malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	case errors.Is(err, io.EOF):
		return invalid("body", "is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("body", "malformed JSON: unexpected end of input")
	default:
		return invalid("body", "malformed JSON: %v", err)
	}
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	case "ptr":
		return "value of another type"
	default:
		return kind
	}
}

// ParsePage reads ?limit= (1..MaxLimit, default DefaultLimit) and ?after=
// (an id, default 0) from a list request.
func ParsePage(r *http.Request) (Page, error) {
	p := Page{Limit: DefaultLimit}
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return Page{}, invalid("limit", "must be an integer from 1 to %d, got %q", MaxLimit, s)
		}
		p.Limit = n
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return Page{}, invalid("after", "must be a non-negative integer id (the next_after of the previous page), got %q", s)
		}
		p.After = n
	}
	return p, nil
}

// ParseID reads the {id} path value of a request.
func ParseID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, invalid("id", "must be a positive integer, got %q", s)
	}
	return n, nil
}

func formatID(id int64) string { return strconv.FormatInt(id, 10) }
