// The Go peer of `make bench`: net/http + amqp091-go with deferred confirms.
// Checks the bearer token's SHA-256 digest in constant time, publishes the raw body
// (persistent, topic exchange, routing key = the CloudEvent type), answers 204 after the ack.
// Usage: peer -port P -amqp-url URL -exchange NAME -token-digest sha256:<hex>
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	port := flag.String("port", "", "listen port")
	url := flag.String("amqp-url", "", "broker URL")
	exchange := flag.String("exchange", "", "exchange name")
	tokenDigest := flag.String("token-digest", "", "sha256:<hex>")
	flag.Parse()
	digest, err := hex.DecodeString(strings.TrimPrefix(*tokenDigest, "sha256:"))
	if err != nil {
		log.Fatal(err)
	}
	conn, err := amqp.Dial(*url)
	if err != nil {
		log.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		log.Fatal(err)
	}
	if err := ch.ExchangeDeclare(*exchange, "topic", true, false, false, false, nil); err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/callbacks/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		seen := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(seen[:], digest) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 262144))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var event struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(body, &event) != nil || event.Type == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, *exchange, event.Type, false, false,
			amqp.Publishing{ContentType: "application/cloudevents+json", DeliveryMode: amqp.Persistent,
				Timestamp: time.Now(), Body: body})
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		// amqp091-go 1.5 (Debian bookworm) has no WaitContext; Wait returns on ack, nack or close.
		if !confirm.Wait() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	server := &http.Server{Addr: "127.0.0.1:" + *port, Handler: mux}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		<-stop
		server.Close()
	}()
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
	conn.Close()
}
