package proxyserver

import (
	"net/http"

	"github.com/strangler-fig/strangler/internal/admin"
	"github.com/strangler-fig/strangler/internal/toggles"
)

// ReplicaList is the answer of GET /admin/replicas.
type ReplicaList struct {
	// Replicas are the replicas seen in the last minute, by id.
	Replicas []ReplicaView `json:"replicas"`
}

// ReplicaView is one replica in ReplicaList.
type ReplicaView struct {
	toggles.Replica
	// Self marks the replica that answered.
	Self bool `json:"self,omitempty"`
}

// replicasHandler serves GET /admin/replicas in fleet mode: the replicas
// seen in the last minute with the revision each serves and its last
// contact; 503 while the store is unreachable.
func replicasHandler(fl toggles.Fleet, store *toggles.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Refresh this replica's own entry first, so the list shows the
		// revision it serves now.
		_ = fl.Heartbeat(r.Context())
		list, err := fl.Replicas(r.Context())
		if err != nil {
			admin.WriteJSON(w, http.StatusServiceUnavailable, toggles.APIError{Error: "the shared flags store (PostgreSQL) is unreachable: the replica list lives there; this replica serves revision " +
				toggles.ETag(store.Snapshot().Revision()) + " (" + err.Error() + ")"})
			return
		}
		out := ReplicaList{Replicas: make([]ReplicaView, 0, len(list))}
		for _, rep := range list {
			out.Replicas = append(out.Replicas, ReplicaView{Replica: rep, Self: rep.ID == fl.Replica()})
		}
		admin.WriteJSON(w, http.StatusOK, out)
	})
}
