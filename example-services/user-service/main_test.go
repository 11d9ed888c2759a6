package main

import (
	"testing"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/exampleapp/apptest"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func start(tb testing.TB) *apptest.Server { return apptest.Start(tb, exampleapp.UserService()) }

func TestUsersContract(t *testing.T) { apptest.RunContract(t, start, apptest.Users()) }

func TestDuplicateEmailConflict(t *testing.T) { apptest.RunUserConflicts(t, start) }

func TestCreateAfterCopiedRows(t *testing.T) {
	apptest.RunCopiedIDs(t, start, apptest.Users(),
		`INSERT INTO users (id, email, username) VALUES ($1::bigint, 'copied' || $1::text || '@example.com', 'copied')`)
}
