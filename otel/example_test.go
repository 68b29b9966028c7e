package redlockotel_test

import (
	"context"
	"fmt"
	"log"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/redlock-go/redlock"
	redlockotel "github.com/redlock-go/redlock/otel"
)

// WithTelemetry reports every call of the Manager as metrics and spans. A
// ManualReader shows the metrics here; in production, give the SDK a
// periodic reader and a batcher with your exporters (or pass nil, nil for
// the global providers).
func ExampleWithTelemetry() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider() // sdktrace.WithBatcher(exporter)
	ctx := context.Background()
	defer mp.Shutdown(ctx)
	defer tp.Shutdown(ctx)

	m, err := redlock.New([]redlock.Instance{
		redlock.Addr("localhost:6379"), redlock.Addr("localhost:6380"), redlock.Addr("localhost:6381"),
	}, redlockotel.WithTelemetry(mp, tp))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	// The call's span (redlock.lock) is a child of the span in ctx.
	ctx, job := tp.Tracer("nightly").Start(ctx, "nightly-report")
	l, err := m.Lock(ctx, "nightly-report", 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	// ... the work ...
	if err := l.Unlock(ctx); err != nil {
		log.Print(err)
	}
	job.End()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, metric := range sm.Metrics {
			fmt.Println(sm.Scope.Name, metric.Name) // redlock.operation.duration, redlock.lock.attempts, redlock.locks.held
		}
	}
}
