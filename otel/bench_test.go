package redlockotel_test

import (
	"context"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/redlock-go/redlock"
	redlockotel "github.com/redlock-go/redlock/otel"
)

// BenchmarkLockUnlock is a Lock+Unlock cycle on three local servers
// without the option, with WithTelemetry on no-op providers, and with the
// SDK (ManualReader, SpanRecorder): the cost of the telemetry per call.
func BenchmarkLockUnlock(b *testing.B) {
	servers := startServers(b, 3)
	for _, c := range []struct {
		name string
		opts func(b *testing.B) []redlock.Option
	}{
		{"none", func(*testing.B) []redlock.Option { return nil }},
		{"noop", func(*testing.B) []redlock.Option {
			return []redlock.Option{redlockotel.WithTelemetry(metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider())}
		}},
		{"sdk", func(b *testing.B) []redlock.Option { return []redlock.Option{newRecorded(b).option()} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := newManager(b, servers, c.opts(b)...)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l, err := m.Lock(ctx, "bench", 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
