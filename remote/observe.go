package remote

import "context"

// Observation hooks for metrics: each request the client sends carries its
// operation name ("list files", "put block", …) in its context, so an
// http.RoundTripper wrapped around Config.HTTPClient's transport can count
// requests and bytes by operation; Config.OnRetry hears each retry.

type opKey struct{}

func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// Operation returns the operation name an API request's context carries
// ("" if none: blob requests are made by the SDK and carry none).
func Operation(ctx context.Context) string {
	op, _ := ctx.Value(opKey{}).(string)
	return op
}
