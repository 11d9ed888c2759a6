package togglescmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/strangler-fig/strangler/internal/toggles"
)

// AdminClient talks to a strangler-proxy's admin API.
type AdminClient struct {
	// BaseURL is the admin listener, e.g. http://127.0.0.1:9901.
	BaseURL string
	// Token is sent as a bearer token; writes need it.
	Token string
	// HTTP sends the requests. Nil means http.DefaultClient.
	HTTP *http.Client
}

// ErrAdmin is wrapped by every error answer of the admin API.
var ErrAdmin = errors.New("admin API error")

// List returns every flag.
func (c *AdminClient) List(ctx context.Context) ([]toggles.FlagView, error) {
	var out toggles.FlagList
	if err := c.do(ctx, http.MethodGet, "/admin/flags", "", nil, &out); err != nil {
		return nil, fmt.Errorf("list flags: %w", err)
	}
	return out.Flags, nil
}

// Get returns one flag.
func (c *AdminClient) Get(ctx context.Context, key string) (toggles.FlagView, error) {
	var out toggles.FlagView
	if err := c.do(ctx, http.MethodGet, "/admin/flags/"+url.PathEscape(key), key, nil, &out); err != nil {
		return out, fmt.Errorf("get flag %s: %w", key, err)
	}
	return out, nil
}

// Update changes one flag and returns it as now in force.
func (c *AdminClient) Update(ctx context.Context, key string, p toggles.Patch) (toggles.FlagView, error) {
	var out toggles.FlagView
	body, err := json.Marshal(p)
	if err != nil {
		return out, fmt.Errorf("update flag %s: %w", key, err)
	}
	if err := c.do(ctx, http.MethodPut, "/admin/flags/"+url.PathEscape(key), key, body, &out); err != nil {
		return out, fmt.Errorf("update flag %s: %w", key, err)
	}
	return out, nil
}

// Replica is one entry of GET /admin/replicas.
type Replica struct {
	ID       string `json:"id"`
	Revision int64  `json:"revision"`
	Self     bool   `json:"self"`
}

// Replicas returns the replicas of fleet mode seen in the last minute;
// ok is false for a proxy with a flags file (404).
func (c *AdminClient) Replicas(ctx context.Context) (list []Replica, ok bool, err error) {
	var out struct {
		Replicas []Replica `json:"replicas"`
	}
	err = c.do(ctx, http.MethodGet, "/admin/replicas", "", nil, &out)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, fmt.Errorf("list replicas: %w", err)
	}
	return out.Replicas, true, nil
}

// Resume rearms a flag's tripped guard and lets its stopped ramp go on;
// it returns the flag as now in force.
func (c *AdminClient) Resume(ctx context.Context, key string) (toggles.FlagView, error) {
	var out toggles.FlagView
	if err := c.do(ctx, http.MethodPost, "/admin/flags/"+url.PathEscape(key)+"/resume", key, nil, &out); err != nil {
		return out, fmt.Errorf("resume flag %s: %w", key, err)
	}
	return out, nil
}

func (c *AdminClient) do(ctx context.Context, method, path, flag string, body []byte, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("--admin %q is not a usable URL: %w", c.BaseURL, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("cannot connect to %s: is strangler-proxy running? Point --admin (or $STRANGLER_ADMIN_URL) at its admin listener: %w", base, err)
		}
		return fmt.Errorf("reach admin API at %s (--admin): %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read admin API answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, err: statusError(resp.StatusCode, flag, data)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API answer is not the JSON expected (is --admin %s a strangler-proxy admin listener?): %w", base, err)
	}
	return nil
}

// StatusError is an error answer of the admin API; it wraps ErrAdmin.
type StatusError struct {
	Code int // the HTTP status
	err  error
}

func (e *StatusError) Error() string { return e.err.Error() }
func (e *StatusError) Unwrap() error { return e.err }

// statusError explains an error answer and what to do about it.
func statusError(code int, flag string, body []byte) error {
	var apiErr toggles.APIError
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &apiErr) == nil && apiErr.Error != "" {
		msg = apiErr.Error
		if len(apiErr.Problems) > 1 {
			msg = strings.Join(apiErr.Problems, "; ")
		}
	}
	switch code {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: 401 unauthorized: pass the admin token with --token or $STRANGLER_ADMIN_TOKEN", ErrAdmin)
	case http.StatusForbidden:
		return fmt.Errorf("%w: 403 forbidden: the token was refused, or the proxy has no admin token configured (admin.token_env)", ErrAdmin)
	case http.StatusNotFound:
		if flag != "" {
			return fmt.Errorf("%w: 404: flag %q is not in the proxy's flags file (rollout get lists the flags)", ErrAdmin, flag)
		}
		return fmt.Errorf("%w: 404: no admin API at this --admin URL", ErrAdmin)
	case http.StatusBadRequest:
		return fmt.Errorf("%w: 400: %s", ErrAdmin, msg)
	}
	return fmt.Errorf("%w: %d: %s", ErrAdmin, code, msg)
}
