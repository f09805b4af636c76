// Package attach carries the CNI plugin's report of a new pod's addresses to
// the agent of its node, over a unix socket, and waits until the agent has
// programmed them.
//
// The API shows a pod's addresses only after the runtime has started its
// containers and reported its status; until the agent knows them, the policy
// table drops the pod's traffic (fail closed). The report closes that window
// before ADD returns, so that a pod's first packets already pass or fail by
// its policies, as with a CNI whose plugin waits for its agent.
package attach

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Path is where the handler is served on the socket.
const Path = "/v1/attachments"

// Request is one pod attachment.
type Request struct {
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	UID         string       `json:"uid,omitempty"`
	ContainerID string       `json:"containerID"`
	IPs         []netip.Addr `json:"ips"`
}

// Validate reports what is missing.
func (r Request) Validate() error {
	var errs []error
	if r.Namespace == "" || r.Name == "" {
		errs = append(errs, errors.New("namespace and name are required"))
	}
	if len(r.IPs) == 0 {
		errs = append(errs, errors.New("ips is required"))
	}
	for _, ip := range r.IPs {
		if !ip.IsValid() {
			errs = append(errs, errors.New("ips holds an invalid address"))
		}
	}
	return errors.Join(errs...)
}

// RejectedError is a request the agent refuses (the pod is not on its node,
// an address is outside its ranges): reported as 422, not retried.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return e.Reason }

// Handler serves Path: it decodes a Request and answers once fn returns.
func Handler(fn func(context.Context, Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var req Request
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "decode attachment: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := req.Validate(); err != nil {
			http.Error(w, "invalid attachment: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := fn(r.Context(), req); err != nil {
			code := http.StatusServiceUnavailable
			var rej *RejectedError
			if errors.As(err, &rej) {
				code = http.StatusUnprocessableEntity
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// Notify reports req to the agent listening on socket and waits for its
// answer, at most timeout.
func Notify(socket string, req Request, timeout time.Duration) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent"+Path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return fmt.Errorf("report pod %s/%s to the agent at %s: %w", req.Namespace, req.Name, socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("report pod %s/%s to the agent: %s: %s", req.Namespace, req.Name, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Serve serves h on a unix socket at path until ctx ends, replacing a socket a
// previous process left. Only the node's root may connect (0600).
func Serve(ctx context.Context, path string, h http.Handler) error {
	_ = removeSocket(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
