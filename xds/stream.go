package xds

import (
	"context"
	"errors"
	"io"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (a *ADS) newConn(delta bool, node NodeInfo) *conn {
	return &conn{id: a.nextID.Add(1), node: node, connectedAt: time.Now(), delta: delta,
		notify: make(chan struct{}, 1), kick: make(chan struct{})}
}

// receive reads requests into a channel, so the stream's goroutine can also
// wait for pushes.
func receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	reqs, errc := make(chan T), make(chan error, 1)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

func streamEnd(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// serve runs one stream of either protocol: it admits the node of the
// first request, joins the proxy to its group, then handles requests and
// pushes (in make-before-break order) whenever the group's configuration
// changes, until the stream ends.
func serve[Req any](a *ADS, ctx context.Context, delta, authenticate bool, recv func() (Req, error),
	nodeOf func(Req) *corev3.Node, typeOf func(Req) string,
	handle func(*conn, Req) error, push func(*conn, string) error) error {
	if !authenticate {
		if n := a.anonStreams.Add(1); n > int64(a.maxAnonStreams) {
			a.anonStreams.Add(-1)
			return exhausted("the anonymous xDS endpoint already serves %d streams (--xds-plaintext-max-streams): use the authenticated port", a.maxAnonStreams)
		}
		defer a.anonStreams.Add(-1)
	}
	reqs, errc := receive(ctx, recv)
	var first Req
	deadline := time.NewTimer(a.firstRequest)
	select {
	case first = <-reqs:
		deadline.Stop()
	case err := <-errc:
		deadline.Stop()
		return streamEnd(err)
	case <-ctx.Done():
		deadline.Stop()
		return nil
	case <-deadline.C:
		return status.Errorf(codes.DeadlineExceeded, "no request within %s of opening the stream (xds.FirstRequestTimeout)", a.firstRequest)
	}
	node, err := a.admit(ctx, nodeOf(first), authenticate)
	if err != nil {
		return err
	}
	c := a.newConn(delta, node)
	c.anonymous = !authenticate
	if err := a.join(c); err != nil {
		a.log.Info("refused a proxy", "node", node.ID, "reason", err.Error())
		return err
	}
	defer a.leave(c)
	a.log.V(1).Info("proxy connected", "node", node.ID, "delta", delta)

	// A stream does not outlive the credential that admitted it: at its
	// expiry the stream ends, and the proxy reconnects presenting its
	// current token or certificate (Envoy re-reads the token file for
	// every stream; weft agent's files are renewed before expiry).
	var expired <-chan time.Time
	if exp := node.CredentialExpires; !exp.IsZero() {
		timer := time.NewTimer(time.Until(exp))
		defer timer.Stop()
		expired = timer.C
	}

	check := func(r Req) error {
		switch t := typeOf(r); {
		case t == "":
			return status.Error(codes.InvalidArgument, "type_url is empty: weft serves ADS only, name the resource type")
		case !servedTypes[t]:
			return status.Errorf(codes.InvalidArgument, "type_url %.128q is not a type weft serves (clusters, endpoints, listeners, routes, secrets)", t)
		}
		return handle(c, r)
	}
	if err := check(first); err != nil {
		return err
	}
	// A proxy that does not answer within ProxyAckTimeout counts as
	// rejecting its policies (PolicyState); when that moment comes, the
	// status writer is told, as for an answer.
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	defer ackTimer.Stop()
	var armed time.Time
	arm := func() {
		if since := c.unansweredSince(); !since.IsZero() && !since.Equal(armed) {
			armed = since
			ackTimer.Reset(time.Until(since.Add(a.ackTimeout)))
		}
	}
	arm()
	for {
		select {
		case <-ackTimer.C:
			if since := c.unansweredSince(); !since.IsZero() && since.Equal(armed) {
				a.unresponsive(c, since)
			} else {
				armed = time.Time{}
				arm()
			}
			continue
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return streamEnd(err)
		case <-c.kick:
			return c.kickReason
		case <-expired:
			return status.Errorf(codes.Unauthenticated, "node %s: its %s credential expired at %s; reconnect with a current one", node.ID, node.Auth, node.CredentialExpires.UTC().Format(time.RFC3339))
		case r := <-reqs:
			if err := check(r); err != nil {
				return err
			}
			arm()
		case <-c.notify:
			for _, t := range pushOrder {
				c.mu.Lock()
				subscribed := c.types.get(t) != nil
				c.mu.Unlock()
				if subscribed {
					if err := push(c, t); err != nil {
						return err
					}
				}
			}
			arm()
		}
	}
}
