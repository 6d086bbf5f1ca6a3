package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/social-prescribing/exchange/internal/buildinfo"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// defaultAddr is where `go run ./server` listens for gRPC.
const defaultAddr = "127.0.0.1:50051"

// app holds the global flags and the connection, made on first use.
type app struct {
	env
	configPath string
	addr       string
	token      string
	caFile     string
	insecure   bool
	output     string
	timeout    time.Duration
	requestID  string

	client *client.Client
}

// config is the file at --config (default: the user's config directory,
// exchangectl/config.yaml).
type config struct {
	Addr     string `yaml:"addr"`
	Token    string `yaml:"token"`
	CAFile   string `yaml:"ca-file"`
	Insecure bool   `yaml:"insecure"`
}

const rootLong = `exchangectl drives the referral exchange from a terminal or a script.

Where the exchange is and who you are come from, in this order: the flags
--addr and --token; the environment variables EXCHANGE_ADDR and
EXCHANGE_TOKEN; the config file (--config, or EXCHANGE_CONFIG, default
$XDG_CONFIG_HOME/exchangectl/config.yaml), which holds

  addr: exchange.example.nhs.uk:443
  token: sprx_...
  ca-file: /etc/ssl/exchange-ca.pem   # optional
  insecure: false                     # plaintext; only for loopback

The default address is ` + defaultAddr + `. Connections use TLS except to a
loopback address (127.0.0.1, ::1, localhost) or with --insecure.

Output is an aligned table; -o json prints the exchange's JSON (the proto3
JSON mapping) for scripts. Errors go to stderr with the status code and the
exchange's reason. Exit status: 0 done; 1 the exchange refused or failed the
request (or an import skipped rows); 2 bad command line; 3 the exchange could
not be reached.`

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:               "exchangectl",
		Short:             "Drive the social prescribing referral exchange",
		Long:              rootLong,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.configure(cmd) },
		Example: `  go run ./server --demo &      # the exchange, with demo organisations
  export EXCHANGE_TOKEN=$(jq -r '.[2].api_key' data/demo-credentials.json)   # Hillside Walkers
  exchangectl referral list --state requested
  exchangectl referral accept 01JD2X4TFQ3M5 -o json`,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.Version = buildinfo.String("exchangectl")
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&a.addr, "addr", "", "exchange gRPC address host:port (env EXCHANGE_ADDR; default "+defaultAddr+")")
	f.StringVar(&a.token, "token", "", "API key (env EXCHANGE_TOKEN; prefer the environment or the config file, which other users cannot read)")
	f.StringVar(&a.configPath, "config", "", "config file (env EXCHANGE_CONFIG; default $XDG_CONFIG_HOME/exchangectl/config.yaml)")
	f.StringVar(&a.caFile, "ca-file", "", "PEM file of the CA that signed the exchange's certificate (default: the system's)")
	f.BoolVar(&a.insecure, "insecure", false, "plaintext gRPC; the API key is then sent in clear, so only for a loopback address")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json; for reports also csv")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "how long to wait for each call to the exchange")
	root.AddCommand(a.orgCmd(), a.keyCmd(), a.serviceCmd(), a.capacityCmd(), a.consentCmd(),
		a.referralCmd(), a.feedbackCmd(), a.eventsCmd(), a.directoryCmd(), a.reportCmd(),
		a.auditCmd(), a.personCmd(), a.backupCmd())
	return root
}

// configure fills the connection settings from flags, environment and the
// config file, in that order.
func (a *app) configure(cmd *cobra.Command) error {
	if a.output != "table" && a.output != "json" && (a.output != "csv" || cmd.Parent() == nil || cmd.Parent().Name() != "report") {
		return usagef("--output must be table or json (or csv, for reports), not %q", a.output)
	}
	path, explicit := a.configPath, a.configPath != ""
	if !explicit {
		if path = a.getenv("EXCHANGE_CONFIG"); path != "" {
			explicit = true
		} else if dir, err := os.UserConfigDir(); err == nil {
			path = filepath.Join(dir, "exchangectl", "config.yaml")
		}
	}
	var cfg config
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := yaml.Unmarshal(b, &cfg); err != nil {
				return fmt.Errorf("config file %s: %w", path, err)
			}
		case explicit || !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("config file: %w", err)
		}
	}
	pick := func(flag, envName, file, def string) string {
		for _, v := range []string{flag, a.getenv(envName), file, def} {
			if v != "" {
				return v
			}
		}
		return ""
	}
	a.addr = pick(a.addr, "EXCHANGE_ADDR", cfg.Addr, defaultAddr)
	a.token = pick(a.token, "EXCHANGE_TOKEN", cfg.Token, "")
	a.caFile = pick(a.caFile, "", cfg.CAFile, "")
	if !cmd.Flags().Changed("insecure") {
		a.insecure = cfg.Insecure
	}
	return nil
}

// conn returns the connection, dialling it on first use.
func (a *app) conn() (*client.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	if a.token == "" {
		return nil, usagef("no API key: set EXCHANGE_TOKEN, --token or token in the config file")
	}
	opts := []client.Option{client.WithAPIKey(a.token)}
	switch {
	case a.insecure || loopback(a.addr):
		opts = append(opts, client.WithInsecure())
	case a.caFile != "":
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", a.caFile)
		}
		opts = append(opts, client.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	default:
		opts = append(opts, client.WithTLS(nil))
	}
	c, err := client.Dial(a.addr, opts...)
	if err != nil {
		return nil, err
	}
	a.client = c
	return c, nil
}

// loopback reports whether addr's host is a loopback address.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ctx is the context of one call: the command's, with --timeout.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// do runs one call with the connection and prints its result.
func do[R proto.Message](a *app, cmd *cobra.Command, call func(context.Context, *client.Client) (R, error)) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	r, err := call(ctx, c)
	if err != nil {
		return err
	}
	return a.print(r)
}

// withRequestID puts --request-id on a mutation, when given. Without it the
// client library chooses a fresh one for each command.
func (a *app) withRequestID(m proto.Message) {
	if a.requestID == "" {
		return
	}
	r := m.ProtoReflect()
	if f := r.Descriptor().Fields().ByName("request_id"); f != nil {
		r.Set(f, protoreflect.ValueOfString(a.requestID))
	}
}

// requestIDFlag adds --request-id to a command that changes something.
func (a *app) requestIDFlag(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().StringVar(&a.requestID, "request-id", "",
		"id of this request (at most 64 characters); run the same command again with the same id and the exchange applies it once")
	return cmd
}

// describe puts an error in words and picks its exit status.
func describe(err error) (string, int) {
	if _, ok := status.FromError(err); !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return "the exchange did not answer within --timeout", exitUnavailable
		}
		return err.Error(), exitRefused
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return client.Describe(err) + "\n(is the exchange running at this address? see --addr)", exitUnavailable
	case codes.DeadlineExceeded:
		return client.Describe(err), exitUnavailable
	case codes.Unauthenticated:
		return client.Describe(err) + "\n(check the API key: EXCHANGE_TOKEN, --token or the config file)", exitRefused
	}
	return client.Describe(err), exitRefused
}

func isCobraUsage(err error) bool {
	for _, p := range []string{"unknown command", "unknown flag", "required flag", "if any flags in the group"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// args checks a command's number of positional arguments.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		if len(got) != len(names) {
			return usagef("%s takes %d argument(s): %s; got %d", cmd.CommandPath(), len(names), strings.Join(names, " "), len(got))
		}
		return nil
	}
}

// group is a command that only holds subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		}}
	cmd.AddCommand(subs...)
	var examples []string
	for _, sub := range subs {
		if ex, _, _ := strings.Cut(sub.Example, "\n"); ex != "" {
			examples = append(examples, strings.TrimSuffix(ex, " \\"))
		}
	}
	cmd.Example = strings.Join(examples, "\n")
	return cmd
}

// enumFlag is a flag taking one value of a proto enum by its code, in any
// case ("requested", "IN_PROGRESS").
type enumFlag struct {
	d protoreflect.EnumDescriptor
	n protoreflect.EnumNumber
}

func (e *enumFlag) Set(s string) error {
	n, ok := pb.ParseCode(e.d, s)
	if !ok {
		return fmt.Errorf("%q is not one of %s", s, strings.Join(pb.Codes(e.d), ", "))
	}
	e.n = n
	return nil
}

func (e *enumFlag) String() string {
	if e.n == 0 {
		return ""
	}
	return string(e.d.Values().ByNumber(e.n).Name())[len(pb.EnumPrefix(e.d)):]
}

func (e *enumFlag) Type() string { return "code" }

// enumListFlag is a repeatable flag of enum codes, also comma-separated.
type enumListFlag struct {
	d protoreflect.EnumDescriptor
	n []protoreflect.EnumNumber
}

func (e *enumListFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		var one enumFlag = enumFlag{d: e.d}
		if err := one.Set(part); err != nil {
			return err
		}
		e.n = append(e.n, one.n)
	}
	return nil
}

func (e *enumListFlag) String() string {
	var s []string
	for _, n := range e.n {
		s = append(s, (&enumFlag{d: e.d, n: n}).String())
	}
	return strings.Join(s, ",")
}

func (e *enumListFlag) Type() string { return "codes" }

// addEnum adds an enum flag to fs whose usage lists the codes.
func addEnum(fs *pflag.FlagSet, name string, d protoreflect.EnumDescriptor, usage string) *enumFlag {
	f := &enumFlag{d: d}
	fs.Var(f, name, usage+": one of "+strings.ToLower(strings.Join(pb.Codes(d), ", ")))
	return f
}

// addEnumList adds a repeatable enum flag.
func addEnumList(fs *pflag.FlagSet, name string, d protoreflect.EnumDescriptor, usage string) *enumListFlag {
	f := &enumListFlag{d: d}
	fs.Var(f, name, usage+" (repeat or separate with commas): "+strings.ToLower(strings.Join(pb.Codes(d), ", ")))
	return f
}

// enumList converts a list flag's numbers to an enum slice.
func enumList[E ~int32](f *enumListFlag) []E {
	out := make([]E, len(f.n))
	for i, n := range f.n {
		out[i] = E(n)
	}
	return out
}

// qualify turns a short id into a resource name: qualify("referrals", "x")
// is "referrals/x"; a full name is returned unchanged.
func qualify(collection, s string) string {
	if strings.HasPrefix(s, collection+"/") {
		return s
	}
	return collection + "/" + s
}

// serviceName accepts "org/service" or the full
// "organizations/org/services/service".
func serviceName(s string) (string, error) {
	if strings.HasPrefix(s, "organizations/") {
		return s, nil
	}
	org, svc, ok := strings.Cut(s, "/")
	if !ok || org == "" || svc == "" || strings.Contains(svc, "/") {
		return "", usagef("%q is not a service: give organization/service, e.g. hillside-walkers/health-walks", s)
	}
	return "organizations/" + org + "/services/" + svc, nil
}
