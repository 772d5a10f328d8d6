"""A local stand-in for Stripe's API (the few endpoints Alumia calls), served from a thread, plus a signer
for webhook events in Stripe's scheme. No network: everything stays on 127.0.0.1."""

import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness import Server


class StripeStandIn:
    """`POST /v1/checkout/sessions` and `POST /v1/payment_intents` answered realistically; every request
    recorded."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self._by_idempotency_key: dict[str, dict[str, Any]] = {}
        self.intents: list[dict[str, Any]] = []  # off-session PaymentIntents, in the order created
        self.decline_next = 0  # how many coming PaymentIntents are declined (402 card_error)
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
                                Route("/v1/payment_intents", self._create_intent, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"stripe-standin-{self.port}", daemon=True)

    async def _create_session(self, request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        record = {"path": request.url.path, "authorization": request.headers.get("authorization"),
                  "idempotencyKey": request.headers.get("idempotency-key"), "form": form}
        with self._lock:
            self.requests.append(record)
            key = record["idempotencyKey"]
            if key and key in self._by_idempotency_key:
                return JSONResponse(self._by_idempotency_key[key])
            if not (record["authorization"] or "").startswith("Bearer sk_test_"):
                return JSONResponse({"error": {"type": "invalid_request_error",
                                               "message": "Invalid API Key provided"}}, status_code=401)
            session_id = "cs_test_" + secrets.token_hex(12)
            unit = int(form["line_items[0][price_data][unit_amount]"])
            amount = unit * int(form["line_items[0][quantity]"])
            session = {
                "id": session_id, "object": "checkout.session", "mode": form.get("mode"),
                "status": "open", "payment_status": "unpaid", "livemode": False,
                "amount_subtotal": amount, "amount_total": amount,
                "currency": form["line_items[0][price_data][currency]"],
                "client_reference_id": form.get("client_reference_id"),
                "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "payment_intent": None, "success_url": form.get("success_url"),
                "cancel_url": form.get("cancel_url"), "created": int(time.time()),
                "expires_at": int(time.time()) + 86_400,
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            }
            self.sessions[session_id] = session
            if key:
                self._by_idempotency_key[key] = session
        return JSONResponse(session)

    async def _create_intent(self, request: Request) -> JSONResponse:
        """`POST /v1/payment_intents` (confirmed at once): succeeded, or declined when asked to."""
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        record = {"path": request.url.path, "authorization": request.headers.get("authorization"),
                  "idempotencyKey": request.headers.get("idempotency-key"), "form": form}
        with self._lock:
            self.requests.append(record)
            key = record["idempotencyKey"]
            if key and key in self._by_idempotency_key:
                return JSONResponse(self._by_idempotency_key[key])
            amount = int(form["amount"])
            intent = {
                "id": "pi_" + secrets.token_hex(12), "object": "payment_intent", "amount": amount,
                "amount_received": amount, "currency": form["currency"], "customer": form.get("customer"),
                "payment_method": form.get("payment_method"), "confirmation_method": "automatic",
                "off_session": form.get("off_session"), "confirm": form.get("confirm"),
                "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "status": "succeeded", "livemode": False, "created": int(time.time()),
                "last_payment_error": None,
            }
            self.intents.append(intent)
            if self.decline_next > 0:
                self.decline_next -= 1
                declined = {"code": "card_declined", "decline_code": "insufficient_funds"}
                intent.update(status="requires_payment_method", amount_received=0,
                              last_payment_error=declined)
                return JSONResponse({"error": {
                    "type": "card_error", **declined, "message": "Your card has insufficient funds.",
                    "payment_intent": intent}}, status_code=402)
            if key:
                self._by_idempotency_key[key] = intent
        return JSONResponse(intent)

    def __enter__(self) -> "StripeStandIn":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the Stripe stand-in did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """A webhook event as Stripe delivers it."""
    return {"id": event_id or "evt_" + secrets.token_hex(12), "object": "event", "type": event_type,
            "api_version": "2025-01-27.acacia", "created": int(time.time()), "livemode": False,
            "pending_webhooks": 1, "data": {"object": obj}}


def completed_session(session: dict[str, Any], payment_intent: str | None = None) -> dict[str, Any]:
    """The session as `checkout.session.completed` shows it once paid."""
    return {**session, "status": "complete", "payment_status": "paid",
            "payment_intent": payment_intent or "pi_" + secrets.token_hex(12)}


def expired_session(session: dict[str, Any]) -> dict[str, Any]:
    """The session as `checkout.session.expired` shows it: never paid, its URL gone."""
    return {**session, "status": "expired", "payment_status": "unpaid", "url": None}


def async_failed_session(session: dict[str, Any], payment_intent: str | None = None) -> dict[str, Any]:
    """The session as `checkout.session.async_payment_failed` shows it: complete, its delayed payment
    failed."""
    return {**session, "status": "complete", "payment_status": "unpaid",
            "payment_intent": payment_intent or "pi_" + secrets.token_hex(12)}


def checkout_intent(session: dict[str, Any], payment_intent: str, customer: str,
                    payment_method: str) -> dict[str, Any]:
    """The PaymentIntent of a paid Checkout deposit made with `setup_future_usage: off_session`."""
    amount = session["amount_total"]
    return {"id": payment_intent, "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": "usd", "customer": customer, "payment_method": payment_method,
            "setup_future_usage": "off_session", "metadata": session["metadata"], "status": "succeeded",
            "livemode": False, "created": int(time.time())}


def refund(payment_intent: str, amount: int, refund_id: str | None = None) -> dict[str, Any]:
    """A succeeded refund object."""
    return {"id": refund_id or "re_" + secrets.token_hex(12), "object": "refund", "amount": amount,
            "currency": "usd", "payment_intent": payment_intent, "charge": "ch_" + secrets.token_hex(12),
            "status": "succeeded", "created": int(time.time())}


def failed_refund(refund_obj: dict[str, Any], status: str = "failed") -> dict[str, Any]:
    """The refund after it failed (or was canceled): Stripe put the money back in the merchant's balance."""
    failed = status == "failed"
    return {**refund_obj, "status": status, "failure_reason": "expired_or_canceled_card" if failed else None,
            "failure_balance_transaction": "txn_" + secrets.token_hex(12) if failed else None}


def signed(body: dict[str, Any] | str, secret: str, timestamp: int | None = None) -> tuple[bytes, dict]:
    """The raw body and headers of a delivery, signed with `secret` in Stripe's v1 scheme."""
    payload = body if isinstance(body, str) else json.dumps(body)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


# Fake Stripe credentials for the servers the tests configure, made at run time.
SECRET_KEY = "sk_test_" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


@dataclass
class StripeEnv:
    """A server configured for Stripe, and the stand-in it talks to."""

    server: Server
    stripe: StripeStandIn
