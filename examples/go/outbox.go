package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// outbox reads the codes the local Cognito emulator "sent" (docs: "The local Cognito emulator", Outbox): in production the user reads
// the code from their mailbox and types it into the journey's form.
type outbox struct {
	url    string
	client *http.Client
}

type outboxMessage struct {
	Destination string `json:"destination"`
	Code        string `json:"code"`
}

func newOutbox(base, destination string, timeout time.Duration) outbox {
	return outbox{
		url:    base + "?destination=" + url.QueryEscape(destination),
		client: &http.Client{Timeout: timeout}, // a deadline on every request, like the step calls
	}
}

func (o outbox) messages() ([]outboxMessage, error) {
	response, err := o.client.Get(o.url)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("outbox: HTTP %d from %s", response.StatusCode, o.url)
	}
	var body struct {
		Messages []outboxMessage `json:"messages"`
	}
	if err := json.NewDecoder(response.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return body.Messages, nil
}

func (o outbox) count() (int, error) {
	messages, err := o.messages()
	return len(messages), err
}

// codeAfter polls until a message newer than the first `seen` arrives, and returns its code.
func (o outbox) codeAfter(seen int) (string, error) {
	deadline := time.Now().Add(o.client.Timeout)
	for time.Now().Before(deadline) {
		messages, err := o.messages()
		if err != nil {
			return "", err
		}
		if len(messages) > seen {
			return messages[len(messages)-1].Code, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", errors.New("outbox: no new code arrived before the deadline")
}

// wrongCode is a code of the same shape that is certainly not the right one.
func wrongCode(code string) string {
	if code == "" {
		return "00000000"
	}
	last := code[len(code)-1]
	replacement := byte('0')
	if last == '0' {
		replacement = '1'
	}
	return code[:len(code)-1] + string(replacement)
}
