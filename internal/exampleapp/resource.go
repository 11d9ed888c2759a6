package exampleapp

import (
	"log/slog"
	"net/http"
)

// Mount serves the REST collection of table t under prefix (e.g.
// "/api/users"): list, get, create, update and delete, with JSON bodies of
// type In for create and update.
func Mount[T Row, In Input](mux *http.ServeMux, prefix string, q Querier, t *Table[T], logger *slog.Logger) {
	item := prefix + "/{id}"
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) (int, any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			status, body, err := h(w, r)
			switch {
			case err != nil:
				WriteError(w, logger, err)
			case body == nil:
				w.WriteHeader(status)
			default:
				WriteJSON(w, status, body)
			}
		})
	}

	handle("GET "+prefix, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		page, err := ParsePage(r)
		if err != nil {
			return 0, nil, err
		}
		items, next, err := t.List(r.Context(), q, page)
		if items == nil {
			items = []T{}
		}
		return http.StatusOK, ListResponse[T]{Items: items, NextAfter: next}, err
	})

	handle("GET "+item, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		id, err := ParseID(r)
		if err != nil {
			return 0, nil, err
		}
		row, err := t.Get(r.Context(), q, id)
		return http.StatusOK, row, err
	})

	handle("POST "+prefix, func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		in, err := readInput[In](w, r)
		if err != nil {
			return 0, nil, err
		}
		row, err := t.Create(r.Context(), q, in)
		if err == nil {
			w.Header().Set("Location", prefix+"/"+formatID(row.RowID()))
		}
		return http.StatusCreated, row, err
	})

	handle("PUT "+item, func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		id, err := ParseID(r)
		if err != nil {
			return 0, nil, err
		}
		in, err := readInput[In](w, r)
		if err != nil {
			return 0, nil, err
		}
		row, err := t.Update(r.Context(), q, id, in)
		return http.StatusOK, row, err
	})

	handle("DELETE "+item, func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		id, err := ParseID(r)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusNoContent, nil, t.Delete(r.Context(), q, id)
	})
}

// readInput decodes and validates a create or update body.
func readInput[In Input](w http.ResponseWriter, r *http.Request) (In, error) {
	var in In
	if err := DecodeJSON(w, r, &in); err != nil {
		return in, err
	}
	return in, in.Validate()
}
