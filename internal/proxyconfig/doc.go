// Package proxyconfig reads and checks the strangler-proxy configuration file.
//
// Loading follows three steps: Default returns a Config with every default
// filled in, Decode reads YAML from an io.Reader on top of it (strictly: an
// unknown key is an error), and Validate checks the result. Every problem is
// reported at once with its field path and, where the YAML says it, its line,
// in a *ValidationError that wraps ErrInvalid:
//
//	cfg, err := proxyconfig.Load("strangler.yaml")
//	if errors.Is(err, proxyconfig.ErrInvalid) {
//		// err.Error() lists every problem, one a line
//	}
//
// The keys are those of DESIGN.md ("Config file"); extensions are documented on
// the fields that carry them.
package proxyconfig
