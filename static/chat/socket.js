// The chat WebSocket (/ws/chat/, see docs/api.md): JSON frames, authenticated by the session
// cookie. It reconnects by itself with exponential backoff (0.5 s doubling up to 10 s, with
// jitter), immediately when the browser comes back online or the tab becomes visible, and
// reports its state: "connecting", "connected", "reconnecting", "offline" or "expired".
//
// A socket the server accepted without a session (the cookie expired) is detected at once:
// the first frame sent after opening is a `ping`, answered with `chat.error` `auth_required`
// instead of `pong`. Close codes 4401 and 4408 mean the same: no reconnecting, "expired".
(function (global) {
  "use strict";

  const MAX_DELAY_MS = 10000;
  const BASE_DELAY_MS = 500;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const OFFLINE_AFTER_ATTEMPTS = 6;
  const AUTH_CLOSE_CODES = new Set([4401, 4408]);

  class ChatSocket {
    constructor(path, handlers) {
      this.path = path;
      this.onFrame = handlers.onFrame || (() => {});
      this.onOpen = handlers.onOpen || (() => {});
      this.onState = handlers.onState || (() => {});
      this.ws = null;
      this.attempt = 0;
      this.state = "connecting";
      this.expired = false;
      this.retryTimer = null;
      this.pingTimer = null;
      this.pongTimer = null;
      global.addEventListener("online", () => this.reconnectNow());
      global.addEventListener("offline", () => this.setState("offline"));
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.reconnectNow();
      });
    }

    get connected() {
      return this.ws !== null && this.ws.readyState === WebSocket.OPEN && !this.expired;
    }

    url() {
      const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
      return `${scheme}//${global.location.host}${this.path}`;
    }

    setState(state) {
      if (this.expired && state !== "expired") return;
      this.state = state;
      this.onState(state);
    }

    connect() {
      if (this.expired) return;
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (e) {
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.addEventListener("open", () => {
        if (this.ws !== ws) return;
        this.attempt = 0;
        // Answered with `pong` when the session is valid, with `auth_required` otherwise.
        ws.send(JSON.stringify({ type: "ping" }));
        this.startPing();
        this.setState("connected");
        this.onOpen();
      });
      ws.addEventListener("message", (event) => {
        if (this.ws !== ws) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        if (!frame || typeof frame.type !== "string") return;
        if (frame.type === "pong") {
          clearTimeout(this.pongTimer);
          return;
        }
        if (frame.type === "chat.error" && frame.code === "auth_required") {
          this.markExpired();
          return;
        }
        this.onFrame(frame);
      });
      ws.addEventListener("close", (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.stopPing();
        if (AUTH_CLOSE_CODES.has(event.code)) {
          this.markExpired();
          return;
        }
        this.scheduleReconnect();
      });
    }

    markExpired() {
      this.expired = true;
      this.stopPing();
      clearTimeout(this.retryTimer);
      const ws = this.ws;
      this.ws = null;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
      this.state = "expired";
      this.onState("expired");
    }

    scheduleReconnect() {
      if (this.expired) return;
      this.attempt += 1;
      const base = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (this.attempt - 1));
      const delay = base * (0.8 + Math.random() * 0.4);
      const offline = navigator.onLine === false || this.attempt > OFFLINE_AFTER_ATTEMPTS;
      this.setState(offline ? "offline" : "reconnecting");
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    reconnectNow() {
      if (this.expired || this.ws !== null) return;
      this.connect();
    }

    startPing() {
      this.stopPing();
      this.pingTimer = setInterval(() => {
        if (!this.send({ type: "ping" })) return;
        clearTimeout(this.pongTimer);
        this.pongTimer = setTimeout(() => {
          // No answer: the connection is dead without having said so. Start again.
          if (this.ws) this.ws.close(4000, "no pong");
        }, PONG_TIMEOUT_MS);
      }, PING_EVERY_MS);
    }

    stopPing() {
      clearInterval(this.pingTimer);
      clearTimeout(this.pongTimer);
    }

    send(frame) {
      if (!this.connected) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }
  }

  global.ChatSocket = ChatSocket;
})(window);
