package shadow

import (
	"encoding/json"
	"net/http"
	"slices"
)

// RouteReport is one route's entry in the mismatch listing.
type RouteReport struct {
	Route      string      `json:"route"`
	Mismatches []Mismatch  `json:"mismatches"`
	Noise      NoiseReport `json:"noise"`
}

// Handler serves GET /admin/shadow/mismatches: with ?route=NAME that route's
// recent mismatches (newest first) and learned noise, else every shadowed
// route's. An unknown route is 404. The proxy mounts it on the admin
// listener; it is read-only.
func (s *Shadower) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		routes := *s.routes.Load()
		var names []string
		if name := r.URL.Query().Get("route"); name != "" {
			if routes[name] == nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "route " + name + " is not shadowed"})
				return
			}
			names = []string{name}
		} else {
			for name := range routes {
				names = append(names, name)
			}
			slices.Sort(names)
		}
		out := struct {
			Routes []RouteReport `json:"routes"`
		}{Routes: []RouteReport{}}
		for _, name := range names {
			st := routes[name].state
			out.Routes = append(out.Routes, RouteReport{Route: name, Mismatches: st.recent(), Noise: st.noise.report()})
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing left to tell it
}
