package exchangev1

// DeadlineMetadata is the metadata key (over REST, the header
// Grpc-Metadata-Exchange-Deadline) of a caller's absolute deadline, in RFC
// 3339 with fractions of a second. gRPC sends a call's deadline as a time
// remaining, which the exchange counts from when it reads the request; a
// request that waited unread (the exchange paused, a full socket) would then
// still be written after its caller gave up. With this, the exchange drops
// such a call, as it does any call whose deadline passes before the store
// takes it. The Go client sends it on every call that has a deadline. It
// only ever shortens a call's deadline; the clocks of caller and exchange
// must agree (NTP), or a caller whose clock is behind sees DEADLINE_EXCEEDED
// early. A value that is not such a time is INVALID_ARGUMENT
// MALFORMED_REQUEST; of several values, the earliest holds.
const DeadlineMetadata = "exchange-deadline"
