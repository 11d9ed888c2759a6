package toggles

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

func TestProviderAnnouncesConfigurationChanges(t *testing.T) {
	var p *Provider
	s := openStore(t, "flags:\n  a: {percentage: 5}\n", StoreOptions{OnChange: func(s *Snapshot) { p.ConfigurationChanged(s) }})
	p = NewProvider(s)
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(context.Background(), p); err != nil {
		t.Fatalf("SetProviderAndWait: %v", err)
	}
	t.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	var mu sync.Mutex
	var got []openfeature.EventDetails
	cb := func(d openfeature.EventDetails) { mu.Lock(); got = append(got, d); mu.Unlock() }
	api.AddHandler(openfeature.ProviderConfigChange, &cb)

	if _, err := s.Update("a", Patch{Percentage: ptr(6.0)}, "test"); err != nil {
		t.Fatalf("Update: %v", err)
	}
	waitFor(t, "the configuration-changed event", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
	mu.Lock()
	defer mu.Unlock()
	if d := got[0]; d.ProviderName != ProviderName || !slices.Contains(d.FlagChanges, "a") {
		t.Fatalf("event: got %+v, want one from %s naming flag a", d, ProviderName)
	}
}
