// Package apply runs datasync's sync: it checks the source (logical
// decoding, replica identities), creates the publication and replication
// slot, copies the tables from the slot's exported snapshot, then applies
// the change stream of package cdc to the target with an exactly-once
// effect.
//
// Bookkeeping lives in the target's datasync schema: sync_state holds each
// sync's applied LSN (written in the same transaction as the changes it
// covers) and sync_tables the LSN at which each table was copied. Run
// explains the handoff from copy to stream and how a source transaction
// too large to hold in memory is applied (in parts, in one target
// transaction); Status and Cleanup serve the status and cleanup commands.
package apply
