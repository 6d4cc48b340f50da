#!/usr/bin/env python3
"""A well-behaved Moat agent (docs/agents.md), Python standard library only.

Input (the run's `input`): {"text": "...", "ask": "question?", "integration_id": "..."}
It echoes the words of `text` as deltas, reports a tool call, optionally asks
a question and echoes the answer, optionally requests an integration token
(and says only whether it got one), then says `done`.
"""
import json
import sys


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def receive(wanted):
    """The next message of type `wanted`; a `cancel` (or end of input) ends the agent."""
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("type") == "cancel":
            sys.exit(0)
        if message.get("type") == wanted:
            return message
    sys.exit(0)


def main():
    start = receive("start")
    given = start.get("input") or {}
    words = str(given.get("text", "hello from echo")).split()
    send({"type": "tool", "name": "split", "status": "started", "data": {}})
    send({"type": "tool", "name": "split", "status": "completed", "data": {"words": len(words)}})
    for word in words:
        send({"type": "delta", "text": word + " "})
    if given.get("ask"):
        send({"type": "ask", "question": str(given["ask"])})
        answer = receive("input")
        send({"type": "delta", "text": "You said: %s" % answer.get("value")})
    if given.get("integration_id"):
        send({"type": "token", "integration_id": str(given["integration_id"])})
        reply = receive("token")
        got = "a token" if reply.get("access_token") else "no token (%s)" % reply.get("error")
        send({"type": "delta", "text": " [%s]" % got})
    send({"type": "done"})


if __name__ == "__main__":
    main()
