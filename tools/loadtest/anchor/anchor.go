// Package anchor is what the exchange's speed is measured against, served
// by the server built for measurement (go build -tags bench, --bench-addr;
// never exchange-server): a bare gRPC server, with no interceptors, offering
//
//   - Echo, which returns its request: the gRPC ceiling;
//   - Write, which stores its request with one plain fsynced bbolt Update
//     and nothing else: the durable-write floor.
//
// Both take and return a google.protobuf.BytesValue, so no contract of the
// exchange is involved.
package anchor

import (
	"context"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The full method names, for conn.Invoke.
const (
	EchoMethod  = "/exchange.bench.v1.Anchor/Echo"
	WriteMethod = "/exchange.bench.v1.Anchor/Write"
)

var bucket = []byte("payloads")

type anchorServer interface {
	echo(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	write(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type server struct{ db *bolt.DB }

func (s *server) echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return in, nil
}

// write is one bbolt Update (fsync on commit) putting the payload under
// the next sequence number.
func (s *server) write(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		seq, _ := b.NextSequence()
		return b.Put(binary.BigEndian.AppendUint64(nil, seq), in.Value)
	})
	return &wrapperspb.BytesValue{}, err
}

func handler(call func(anchorServer, context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := &wrapperspb.BytesValue{}
		if err := dec(in); err != nil {
			return nil, err
		}
		return call(srv.(anchorServer), ctx, in)
	}
}

var desc = grpc.ServiceDesc{
	ServiceName: "exchange.bench.v1.Anchor",
	HandlerType: (*anchorServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: handler(anchorServer.echo)},
		{MethodName: "Write", Handler: handler(anchorServer.write)},
	},
}

// Register serves the anchors on g, writing to db.
func Register(g *grpc.Server, db *bolt.DB) error {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		return err
	}
	g.RegisterService(&desc, &server{db: db})
	return nil
}

// GroupCommit stores payload with bbolt's own group commit (DB.Batch),
// with no gRPC: the durable-write floor of a writer that shares fsyncs.
func GroupCommit(db *bolt.DB, payload []byte) error {
	return db.Batch(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		seq, _ := b.NextSequence()
		return b.Put(binary.BigEndian.AppendUint64(nil, seq), payload)
	})
}
