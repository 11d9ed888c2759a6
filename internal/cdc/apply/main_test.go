package apply

import (
	"testing"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
