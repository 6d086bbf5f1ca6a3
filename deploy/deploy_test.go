// Package deploy holds the exchange's deployment files: the container image
// (Dockerfile), Kubernetes manifests and a systemd unit. These tests check
// the invariants the files must keep, so that an edit that would run two
// writers on one store, run as root, lose the data volume or leave a probe
// pointing nowhere fails here rather than in production.
package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The contract between the files: where the binary is, where the data is.
const (
	binary  = "/usr/local/bin/exchange-server"
	dataDir = "/var/lib/exchange"
)

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// serverBinary builds the server with the Dockerfile's own build command
// (run by a shell, as RUN does), once.
func serverBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the server")
	}
	buildOnce.Do(func() {
		var build string
		for _, in := range dockerfile(t) {
			if m := dockerBuild.FindString(in.args); in.cmd == "RUN" && m != "" {
				build = m
			}
		}
		if build == "" {
			buildErr = errors.New("the Dockerfile has no RUN " + dockerBuild.String())
			return
		}
		dir, err := os.MkdirTemp("", "exchange-deploy")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "exchange-server")
		cmd := exec.Command("sh", "-c", strings.Replace(build, "/out/exchange-server", built, 1))
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s: %v\n%s", build, err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// dockerBuild is the Dockerfile's build of the server: static (no cgo).
var dockerBuild = regexp.MustCompile(`CGO_ENABLED=0 go build [^&;]*-o /out/exchange-server \./server`)

// serverEnv is every EXCHANGE_* variable the server reads, from its help.
func serverEnv(t *testing.T) map[string]bool {
	t.Helper()
	out, _ := exec.Command(serverBinary(t), "--help").CombinedOutput()
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`env (EXCHANGE_[A-Z_]+)`).FindAllStringSubmatch(string(out), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 10 {
		t.Fatalf("the server's help names only %d EXCHANGE_ variables:\n%s", len(vars), out)
	}
	return vars
}

// knownVar reports whether an environment variable set by a deployment
// file means something to the server or its runtime.
func knownVar(server map[string]bool, name string) bool {
	return server[name] || strings.HasPrefix(name, "OTEL_") || name == "GOMEMLIMIT" || name == "GOMAXPROCS"
}

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct{ cmd, args string }

func dockerfile(t *testing.T) []instruction {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		if s := strings.TrimSpace(cur.String()); s != "" {
			cmd, args, _ := strings.Cut(s, " ")
			out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		}
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms []string
	env := map[string]string{}
	last := map[string]string{} // the final stage's instructions
	var runs []string
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
			last = map[string]string{}
		case "RUN":
			runs = append(runs, in.args)
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
		}
		last[in.cmd] = in.args
	}
	if len(froms) < 2 || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("not a multi-stage build with a build stage: FROM %v", froms)
	}
	if base := froms[len(froms)-1]; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("the final base %q is not minimal (distroless static or scratch)", base)
	}
	if build := strings.Join(runs, " "); !dockerBuild.MatchString(build) {
		t.Errorf("the server is not built static: RUN %s", build)
	}
	if u := last["USER"]; u == "" || u == "root" || strings.HasPrefix(u, "0") {
		t.Errorf("USER %q: the image must run as a non-root user", u)
	}
	if env["EXCHANGE_DATA_DIR"] != dataDir || last["VOLUME"] != fmt.Sprintf("[%q]", dataDir) {
		t.Errorf("data directory %q and VOLUME %s must both be %s", env["EXCHANGE_DATA_DIR"], last["VOLUME"], dataDir)
	}
	if !strings.Contains(last["COPY"]+fmt.Sprint(ins), "--chown=65532:65532 /out/data "+dataDir) {
		t.Error("the data directory is not owned by the image's user")
	}
	if hc := last["HEALTHCHECK"]; !strings.Contains(hc, fmt.Sprintf(`CMD [%q, "healthcheck"]`, binary)) {
		t.Errorf("HEALTHCHECK %q does not run %s healthcheck", hc, binary)
	}
	if ep := last["ENTRYPOINT"]; ep != fmt.Sprintf("[%q]", binary) {
		t.Errorf("ENTRYPOINT %s, want %s", ep, binary)
	}
	for _, name := range []string{"EXCHANGE_GRPC_ADDR", "EXCHANGE_HTTP_ADDR"} {
		_, port, err := net.SplitHostPort(env[name])
		if err != nil || !slices.Contains(strings.Fields(last["EXPOSE"]), port) {
			t.Errorf("%s=%s is not EXPOSEd (%s)", name, env[name], last["EXPOSE"])
		}
	}
	server := serverEnv(t)
	for k := range env {
		if !knownVar(server, k) {
			t.Errorf("ENV %s is not read by the server", k)
		}
	}
	// The build context leaves out stores and keys.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"data", "**/operator-key", "**/*.db"} {
		if !slices.Contains(strings.Split(string(ignore), "\n"), p) {
			t.Errorf(".dockerignore does not leave out %s", p)
		}
	}
	// The build command gives a static binary with the health check in it.
	bin := serverBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the server binary is dynamically linked (%v)", p.Type)
		}
	}
	if out, err := exec.Command(bin, "healthcheck", "--help").CombinedOutput(); !strings.Contains(string(out), "SERVING") {
		t.Errorf("healthcheck --help: %v %s", err, out)
	}
}

// manifests decodes every document of a YAML file strictly into its
// Kubernetes type: a misspelt field is an error.
func manifests(t *testing.T, path string) (sts []*appsv1.StatefulSet, svcs []*corev1.Service, other []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var meta struct{ Kind string }
		json.Unmarshal(j, &meta)
		var into any
		switch meta.Kind {
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			sts, into = append(sts, s), s
		case "Service":
			s := &corev1.Service{}
			svcs, into = append(svcs, s), s
		case "ServiceAccount":
			into = &corev1.ServiceAccount{}
		case "":
			continue
		default:
			other = append(other, meta.Kind)
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Errorf("%s document %d (%s): %v", path, i, meta.Kind, err)
		}
	}
	return sts, svcs, other
}

func TestKubernetesManifests(t *testing.T) {
	sts, svcs, other := manifests(t, "kubernetes/exchange.yaml")
	if len(other) > 0 {
		t.Errorf("kinds the test does not check: %v", other)
	}
	if len(sts) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(sts))
	}
	ss := sts[0]
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
		t.Error("the StatefulSet must have exactly one replica: bbolt has a single writer")
	}
	pod := ss.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	env := map[string]string{}
	server := serverEnv(t)
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if !knownVar(server, e.Name) {
			t.Errorf("env %s is not read by the server", e.Name)
		}
	}

	// The store is on the claim, mounted where the server keeps it.
	var claim *corev1.PersistentVolumeClaim
	for i := range ss.Spec.VolumeClaimTemplates {
		claim = &ss.Spec.VolumeClaimTemplates[i]
	}
	if claim == nil || !slices.Contains(claim.Spec.AccessModes, corev1.ReadWriteOnce) || claim.Spec.Resources.Requests.Storage().IsZero() {
		t.Fatal("no ReadWriteOnce PersistentVolumeClaim with a size")
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m, ok := mounts[claim.Name]; !ok || m.MountPath != env["EXCHANGE_DATA_DIR"] || m.MountPath != dataDir || m.ReadOnly {
		t.Errorf("the claim %q is mounted at %q; the data directory is %q", claim.Name, m.MountPath, env["EXCHANGE_DATA_DIR"])
	}

	// TLS comes from a Secret, mounted read-only, and the server reads it.
	var tlsVolume string
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			tlsVolume = v.Name
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("secret volume %s is readable by others", v.Name)
			}
		}
	}
	tm, ok := mounts[tlsVolume]
	if !ok || !tm.ReadOnly {
		t.Fatalf("no read-only mount of a TLS Secret volume")
	}
	for _, k := range []string{"EXCHANGE_TLS_CERT", "EXCHANGE_TLS_KEY"} {
		if filepath.Dir(env[k]) != tm.MountPath {
			t.Errorf("%s=%q is not in the Secret's mount %s", k, env[k], tm.MountPath)
		}
	}

	// Probes ask the gRPC health service.
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		switch {
		case p == nil:
			t.Errorf("no %s probe", name)
		case p.Exec != nil && slices.Equal(p.Exec.Command[:2], []string{binary, "healthcheck"}):
		case p.GRPC != nil && env["EXCHANGE_TLS_CERT"] == "":
		default:
			t.Errorf("the %s probe does not ask the gRPC health service (the kubelet's gRPC probe cannot speak TLS): %+v", name, p.ProbeHandler)
		}
	}

	// Resources are bounded.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if c.Resources.Requests.Name(r, "").IsZero() || c.Resources.Limits.Name(r, "").IsZero() {
			t.Errorf("no %s request and limit", r)
		}
	}

	// Nothing runs as root or can become it.
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.FSGroup == nil {
		t.Error("the pod must run as a non-root user, with an fsGroup so the volume is writable")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("no RuntimeDefault seccomp profile")
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || (csc.Privileged != nil && *csc.Privileged) {
		t.Error("the container must drop all capabilities, forbid privilege escalation and have a read-only root")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod needs no Kubernetes API token")
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 15 {
		t.Error("the grace period must outlast the server's 10 s drain")
	}

	// Services: one for gRPC and one for HTTP, reaching the pod's ports.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, addr := range map[string]string{"grpc": env["EXCHANGE_GRPC_ADDR"], "http": env["EXCHANGE_HTTP_ADDR"]} {
		if _, port, _ := net.SplitHostPort(addr); port != fmt.Sprint(ports[name]) {
			t.Errorf("container port %s is %d, the server listens on %s", name, ports[name], addr)
		}
	}
	served := map[string]bool{}
	for _, s := range svcs {
		for k, v := range s.Spec.Selector {
			if ss.Spec.Template.Labels[k] != v {
				t.Errorf("service %s selects %s=%s, which the pod does not have", s.Name, k, v)
			}
		}
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.String()]; !ok {
				t.Errorf("service %s targets port %s, which the container does not have", s.Name, p.TargetPort.String())
			}
			if s.Spec.ClusterIP != corev1.ClusterIPNone {
				served[p.TargetPort.String()] = true
			}
		}
		if s.Name == ss.Spec.ServiceName && s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("the governing service %s is not headless", s.Name)
		}
	}
	if !served["grpc"] || !served["http"] {
		t.Errorf("services reach %v; want grpc and http", served)
	}
	if !slices.ContainsFunc(svcs, func(s *corev1.Service) bool { return s.Name == ss.Spec.ServiceName }) {
		t.Errorf("no governing service %s", ss.Spec.ServiceName)
	}

	// The kustomization applies the manifests.
	k, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil || !strings.Contains(string(k), "- exchange.yaml") {
		t.Errorf("kustomization.yaml does not list exchange.yaml: %v", err)
	}
}

// unit parses a systemd unit: section.Key -> values in order.
func unit(t *testing.T, path string) map[string][]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := unit(t, "systemd/exchange.service")
	one := func(k string) string {
		v := u["Service."+k]
		if len(v) == 0 {
			return ""
		}
		return v[len(v)-1]
	}
	for k, want := range map[string]string{
		"ExecStart": binary, "DynamicUser": "yes", "StateDirectory": "exchange", "ProtectSystem": "strict",
		"NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"CapabilityBoundingSet": "", "UMask": "0077", "KillSignal": "SIGTERM", "Restart": "on-failure",
		"MemoryDenyWriteExecute": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
	} {
		if _, set := u["Service."+k]; !set || one(k) != want {
			t.Errorf("%s=%q, want %q", k, one(k), want)
		}
	}
	env := map[string]string{}
	for _, e := range u["Service.Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	if env["EXCHANGE_DATA_DIR"] != "/var/lib/"+one("StateDirectory") {
		t.Errorf("EXCHANGE_DATA_DIR=%s is not the StateDirectory /var/lib/%s", env["EXCHANGE_DATA_DIR"], one("StateDirectory"))
	}
	creds := map[string]bool{}
	for _, c := range u["Service.LoadCredential"] {
		name, _, _ := strings.Cut(c, ":")
		creds["%d/"+name] = true
	}
	if !creds[env["EXCHANGE_TLS_CERT"]] || !creds[env["EXCHANGE_TLS_KEY"]] {
		t.Errorf("the TLS files %s, %s are not loaded credentials %v", env["EXCHANGE_TLS_CERT"], env["EXCHANGE_TLS_KEY"], creds)
	}
	if !strings.HasPrefix(one("EnvironmentFile"), "-/etc/exchange/") {
		t.Errorf("EnvironmentFile=%s", one("EnvironmentFile"))
	}

	// The example environment file names only what the server reads.
	server := serverEnv(t)
	ex, err := os.ReadFile("systemd/exchange.env.example")
	if err != nil {
		t.Fatal(err)
	}
	var exampleEnv []string
	for _, line := range strings.Split(string(ex), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "#")
		k, _, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, " ") {
			continue
		}
		exampleEnv = append(exampleEnv, line)
		if !knownVar(server, k) {
			t.Errorf("exchange.env.example sets %s, which the server does not read", k)
		}
	}
	// Values the server parses before its flags (EXCHANGE_RETENTION) are valid.
	cmd := exec.Command(serverBinary(t), "--help")
	cmd.Env = append(os.Environ(), exampleEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the server refuses exchange.env.example: %v\n%s", err, out)
	}
	for k := range env {
		if !knownVar(server, k) {
			t.Errorf("Environment=%s is not read by the server", k)
		}
	}

	// systemd's own checks, where systemd is installed (CI installs it).
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing in CI: .ci/run installs systemd")
		}
		t.Skip("systemd-analyze is not installed; install systemd to verify the unit")
	}
	// verify needs ExecStart to exist: check a copy that points at the build.
	b, _ := os.ReadFile("systemd/exchange.service")
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "exchange.service")
	os.WriteFile(copyPath, bytes.ReplaceAll(b, []byte(binary), []byte(serverBinary(t))), 0o644)
	if out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=true", "--threshold=20", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure over 2.0 (%v)\n%s", err, out)
	}
	if m := regexp.MustCompile(`Overall exposure level for exchange.service: ([0-9.]+)`).FindSubmatch(out); m == nil {
		t.Errorf("no exposure level in:\n%s", out)
	} else {
		t.Logf("systemd-analyze security: exposure %s (0 is best, 10 worst)", m[1])
	}
}
