package localmesh

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// forwarder stands for a Service's port as kube-proxy does: connections to
// its address go to one of the ready backends, spread round-robin; a
// backend that refuses is skipped.
type forwarder struct {
	lis net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	closed   bool
}

func startForwarder(addr string) (*forwarder, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &forwarder{lis: lis, conns: map[net.Conn]struct{}{}}
	go f.serve()
	return f, nil
}

func (f *forwarder) setBackends(b []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backends = append([]string(nil), b...)
}

func (f *forwarder) serve() {
	for {
		c, err := f.lis.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *forwarder) handle(c net.Conn) {
	up, err := f.dial()
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close so the other direction can finish (TLS close_notify).
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	f.untrack(c, up)
}

func (f *forwarder) dial() (net.Conn, error) {
	f.mu.Lock()
	backends := append([]string(nil), f.backends...)
	start := f.next
	f.next++
	f.mu.Unlock()
	for i := range backends {
		b := backends[(start+i)%len(backends)]
		if up, err := net.DialTimeout("tcp", b, 2*time.Second); err == nil {
			return up, nil
		}
	}
	return nil, errors.New("no backend accepts connections")
}

func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(f.conns, c)
	}
}

func (f *forwarder) close() {
	f.lis.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
}
