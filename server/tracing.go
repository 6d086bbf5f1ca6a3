package main

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/stats"
)

// Tracing is off unless the standard OpenTelemetry environment asks for
// it: OTEL_TRACES_EXPORTER (otlp or console), or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), which
// means otlp. OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none keep it
// off. Everything else is the SDK's own reading of OTEL_*: the protocol
// and headers of the exporter, the sampler (OTEL_TRACES_SAMPLER), the
// propagators (OTEL_PROPAGATORS), and the service name and resource
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
//
// Spans are otelgrpc's: one per call, named by the method, with its status
// code. Message contents are never recorded.

// tracingWanted reports whether the environment switches tracing on.
func tracingWanted(getenv func(string) string) bool {
	if getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	if e := getenv("OTEL_TRACES_EXPORTER"); e != "" {
		return e != "none"
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// setupTracing returns the stats handler that traces calls, and the
// function that flushes spans at shutdown; nil when tracing is off.
func setupTracing(ctx context.Context) (stats.Handler, func(context.Context) error, error) {
	if !tracingWanted(os.Getenv) {
		return nil, func(context.Context) error { return nil }, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx) // otlp when only an endpoint is set
	if err != nil {
		return nil, nil, fmt.Errorf("tracing (OTEL_* environment): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "social-prescribing-exchange")),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, nil, fmt.Errorf("tracing resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	h := otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(autoprop.NewTextMapPropagator()))
	return h, tp.Shutdown, nil
}
