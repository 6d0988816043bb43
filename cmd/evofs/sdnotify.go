package main

import (
	"net"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
)

// sdNotify sends a state ("READY=1", "STOPPING=1") to systemd's notify
// socket when $NOTIFY_SOCKET is set (a Type=notify unit); otherwise it does
// nothing. A leading '@' names an abstract socket.
func sdNotify(state string, log *logrus.Entry) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		log.WithError(err).Warn("cannot reach systemd's notify socket")
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.WithError(err).Warn("cannot notify systemd")
	}
}
