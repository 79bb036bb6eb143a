"""The HIAS component: one MQTT connection per device, owned by one thread.

That thread connects (TLS, username/password, client id = entity, Last Will `OFFLINE`), runs
paho's `loop()`, publishes Status/Life/Classification and answers Commands; on any failure it
records a readable problem for health() and the logs (one line per change) and retries with
exponential backoff. Nothing here raises into the daemon: without a broker the daemon keeps
classifying and the journal's outbox keeps the results until HIAS is back.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt

from edge.component import Component, HealthCheck
from edge.hias import commands, payloads, topics
from edge.hias.life import SystemStats
from edge.hias.outbox import Outbox
from edge.secrets import resolve_secret

log = logging.getLogger("edge.hias")

TICK = 0.05                 # seconds per paho loop() call: bounds on_result -> publish latency
CONNACK_TIMEOUT = 10.0
GOODBYE_TIMEOUT = 2.0
STABLE_SESSION = 10.0       # seconds: a shorter session (e.g. kicked by a duplicate client id)
                            # does not reset the backoff, so no reconnect storm
SHORT_SESSION = 2.0         # seconds: closed sooner, twice in a row while the broker accepts
                            # every reconnect, suggests another device with our client id
SESSION_TAKEN_OVER = 0x8E   # MQTT 5 DISCONNECT reason (brokers that send it say so outright)
OUTBOX_WARN_AGE = 600.0     # seconds: an older undelivered result turns the outbox check to warn
QOS = 1
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
REFUSAL_HINTS = {0x87: "check HIAS's ACL for this entity",      # Not authorized
                 0x97: "the broker's quota for this client is used up"}


@dataclass
class Problem:
    severity: str           # "warn" (network, may heal) or "fail" (needs the operator)
    summary: str
    since: float


def describe_error(exc: BaseException, host: str, port: int) -> Tuple[str, str]:
    """(severity, operator-readable summary) for a connect() exception."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return "warn", f"DNS: cannot resolve {host!r} ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fail", f"TLS: certificate of {where} not trusted: {exc.verify_message} " \
                       "(check hias.tls.ca_file and the host name)"
    if isinstance(exc, ssl.SSLError):
        return "fail", f"TLS handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "warn", f"connection refused by {where} (broker down or wrong port)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "warn", f"timed out connecting to {where}"
    if isinstance(exc, OSError):
        return "warn", f"network error connecting to {where}: {exc.strerror or exc}"
    return "fail", f"cannot connect to {where}: {exc}"


def _existing_dir(path: Path) -> Path:
    """Nearest existing ancestor: the data dir may not exist yet when Life is first read."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _no_passphrase() -> bytes:
    """Without a callback OpenSSL would ask for the passphrase on a terminal (none under systemd)."""
    raise ValueError("hias.tls.keyfile is encrypted; give an unencrypted key (readable only by "
                     "the service, e.g. a systemd credential)")


class HiasComponent(Component):
    name = "hias"

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.cfg = daemon.config.hias
        self.journal = daemon.journal
        self.topics = topics.all_topics(self.cfg)
        self.outbox = Outbox(self.journal, self.cfg.resend_rate)
        self._stop = threading.Event()
        self._lock = threading.Lock()          # guards the status fields below
        self._state = "disabled" if not self.cfg.enabled else "stopped"
        self._problem: Optional[Problem] = None
        self._connected_since: Optional[float] = None
        self._counts = {"connects": 0, "published": 0, "delivered": 0, "refused": 0, "life": 0,
                        "commands": 0, "commands_refused": 0}
        self._refusal: Optional[Problem] = None   # the broker refuses results (MQTT 5 PUBACK)
        self._last_life: Optional[Dict[str, float]] = None
        self._retry_in: Optional[float] = None
        self._client: Optional[mqtt.Client] = None
        self._thread: Optional[threading.Thread] = None
        self._worker: Optional[threading.Thread] = None
        self._jobs: queue.Queue[Optional[commands.Command]] = queue.Queue(maxsize=8)
        self._replies: Deque[Dict[str, Any]] = deque(maxlen=64)
        self._status_now = threading.Event()
        # Per-session flags, touched only by the MQTT thread and its callbacks.
        self._session_ok = False
        self._connack_failed = False
        self._had_connack = False
        self._short_drops = 0                  # sessions closed within SHORT_SESSION, in a row
        self._paho_error: Optional[str] = None  # paho's first error line of this session
        self._retained_seen: Optional[bytes] = None   # last retained command refused (log once)
        self._next_life = 0.0
        self._service_error: Optional[str] = None
        data_dir = getattr(getattr(daemon.config, "storage", None), "data_dir", Path("/"))
        self._stats = SystemStats(_existing_dir(data_dir))

    # ------------------------------------------------------------------ Component API
    def start(self) -> None:
        if not self.cfg.enabled:
            log.info("disabled (hias.enabled=false)")
            return
        try:
            password = resolve_secret(self.cfg.password_file, self.cfg.password_credential,
                                      self.cfg.password_env)
        except OSError as exc:   # missing, unreadable, or not UTF-8 text
            where = f"hias.password_file {exc.filename}" \
                if exc.filename == str(self.cfg.password_file) else exc.filename
            self._set_problem("fail", f"cannot read {where}: {exc.strerror or exc}")
            return
        if self.cfg.username and password is None:
            log.warning("no password found (hias.password_file, systemd credential %r, "
                        "$%s); connecting without one", self.cfg.password_credential,
                        self.cfg.password_env)
        try:
            self._client = self._make_client(password)
        except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
            where = "hias.tls (ca_file, certfile, keyfile)"
            self._set_problem("fail", f"cannot load {where}: {getattr(exc, 'strerror', None) or exc}")
            return
        if not self.cfg.tls.enabled:
            log.warning("plain TCP to %s:%s (hias.tls.enabled=false): the password and "
                        "results travel unencrypted", self.cfg.host, self.cfg.port)
        self._stop.clear()
        self._set_state("connecting")
        self._worker = threading.Thread(target=self._work, name="hias-commands", daemon=True)
        self._worker.start()
        self._thread = threading.Thread(target=self._run, name="hias-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._worker is not None:
            with contextlib.suppress(queue.Full):
                self._jobs.put_nowait(None)
            self._worker.join(min(timeout, 5.0))
        if self.cfg.enabled and self._state != "disabled":
            self._set_state("stopped")

    def on_result(self, result: Dict[str, Any]) -> None:
        self.outbox.offer(result)

    def health(self) -> List[HealthCheck]:
        if not self.cfg.enabled:
            return [HealthCheck("hias", "disabled", "HIAS publishing is off (hias.enabled=false)")]
        with self._lock:
            state, problem, retry = self._state, self._problem, self._retry_in
            refusal = self._refusal
        where = f"{self.cfg.host}:{self.cfg.port}"
        detail: Dict[str, Any] = {"broker": where, "entity": self.cfg.entity, "state": state}
        if state == "connected" and refusal is not None:
            retry = self.outbox.refused_retry_in()
            again = f"; results kept, next try in {_age(retry)}" if retry else ""
            detail["since"] = _iso(refusal.since)
            checks = [HealthCheck("hias", refusal.severity, refusal.summary + again, detail)]
        elif state == "connected":
            tls = "TLS" if self.cfg.tls.enabled else "plain TCP"
            checks = [HealthCheck("hias", "ok", f"connected to {where} as {self.cfg.entity} "
                                  f"({tls}, MQTT {self.cfg.protocol})", detail)]
        elif problem is not None:
            again = f"; retrying in {retry:.3g} s" if retry and state != "stopped" else ""
            detail["since"] = _iso(problem.since)
            checks = [HealthCheck("hias", problem.severity, problem.summary + again, detail)]
        elif state == "stopped":
            checks = [HealthCheck("hias", "warn", "HIAS client stopped", detail)]
        else:
            checks = [HealthCheck("hias", "warn", f"connecting to {where}", detail)]
        depth, age = self._outbox_stats()
        odetail = {"depth": depth, "oldest_age_s": age}
        if depth is None:
            checks.append(HealthCheck("hias-outbox", "warn", "outbox unreadable", odetail))
        elif depth == 0:
            checks.append(HealthCheck("hias-outbox", "ok", "every result delivered", odetail))
        else:
            text = f"{depth} result(s) waiting for HIAS, oldest {_age(age)}"
            late = age is not None and age > OUTBOX_WARN_AGE
            checks.append(HealthCheck("hias-outbox", "warn" if late else "ok", text, odetail))
        return checks

    def status(self) -> Dict[str, Any]:
        depth, age = self._outbox_stats()
        with self._lock:
            problem = self._problem or self._refusal
            return {
                "enabled": self.cfg.enabled,
                "state": self._state,
                "broker": f"{self.cfg.host}:{self.cfg.port}",
                "tls": self.cfg.tls.enabled,
                "protocol": self.cfg.protocol,
                "entity": self.cfg.entity,
                "topic": topics.base(self.cfg),
                "connected_since": _iso(self._connected_since),
                "last_error": problem.summary if problem else None,
                "last_error_since": _iso(problem.since) if problem else None,
                "outbox_depth": depth,
                "outbox_oldest_age_s": age,
                "in_flight": len(self.outbox.in_flight),
                "resend_rate": self.cfg.resend_rate,
                "last_life": self._last_life,
                **self._counts,
            }

    # ------------------------------------------------------------------ state bookkeeping
    def _outbox_stats(self) -> Tuple[Optional[int], Optional[float]]:
        try:
            stats = self.journal.outbox_stats()
            return int(stats["depth"]), stats.get("oldest_age_s")
        except Exception as exc:  # the status page must render even if SQLite hiccups
            log.debug("outbox_stats failed: %s", exc)
            return None, None

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _set_problem(self, severity: str, summary: str) -> None:
        """Record and log a problem once; the same problem again is not logged again."""
        with self._lock:
            same = self._problem is not None and self._problem.summary == summary
            if not same:
                self._problem = Problem(severity, summary, time.time())
            if self._state != "connected":
                self._state = "error"
        if not same:
            (log.error if severity == "fail" else log.warning)("%s", summary)

    def _set_refusal(self, reason: Any) -> None:
        """The broker refused a result (logged once per change, kept across reconnects)."""
        topic = self.topics[topics.CLASSIFICATION]
        hint = REFUSAL_HINTS.get(getattr(reason, "value", None))
        summary = f"broker refused to accept results on {topic}: {reason}" + \
            (f" ({hint})" if hint else "")
        with self._lock:
            same = self._refusal is not None and self._refusal.summary == summary
            if not same:
                self._refusal = Problem("fail", summary, time.time())
        if not same:
            log.error("%s; results kept in the outbox and offered again with backoff", summary)

    def _clear_refusal(self) -> None:
        with self._lock:
            had, self._refusal = self._refusal, None
        if had is not None:
            log.info("broker accepts results on %s again", self.topics[topics.CLASSIFICATION])

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # ------------------------------------------------------------------ MQTT thread
    def _make_client(self, password: Optional[str]) -> mqtt.Client:
        protocol = PROTOCOLS[self.cfg.protocol]
        # A clean session on every connect under both versions (clean_start=True in _session):
        # undelivered results live in the journal, and paho re-sends its unacked ones itself.
        session = {} if protocol == mqtt.MQTTv5 else {"clean_session": True}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.entity,
                             protocol=protocol, **session)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, password)
        tls = self.cfg.tls
        if tls.enabled:
            ctx = ssl.create_default_context(cafile=str(tls.ca_file))   # verifies host name
            if tls.certfile is not None:
                ctx.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None,
                                    password=_no_passphrase)
            client.tls_set_context(ctx)
        client.will_set(self.topics[topics.STATUS], "OFFLINE", qos=QOS, retain=False)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _run(self) -> None:
        delay = self.cfg.reconnect_min_delay
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                had_session = self._session()
            except Exception:   # a bug must not end HIAS publishing for the daemon's lifetime
                log.exception("unexpected error in the MQTT thread; reconnecting")
                had_session = False
            if self._stop.is_set():
                break
            stable = had_session and time.monotonic() - began >= STABLE_SESSION
            if stable:
                delay = self.cfg.reconnect_min_delay
            with self._lock:
                self._retry_in = delay
            self._stop.wait(delay)
            if not stable:
                delay = min(delay * 2, self.cfg.reconnect_max_delay)

    def _session(self) -> bool:
        """One connection attempt and, if it succeeds, its whole life. True if CONNACK was OK."""
        client = self._client
        assert client is not None
        self._session_ok = False
        self._had_connack = False
        self._connack_failed = False
        self._paho_error = None
        clean = {"clean_start": True} if self.cfg.protocol == "5" else {}
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, **clean)
        except (OSError, ValueError) as exc:
            self._short_drops = 0   # the broker is not reachable: a short session was no kick
            self._set_problem(*describe_error(exc, self.cfg.host, self.cfg.port))
            return False
        deadline = time.monotonic() + CONNACK_TIMEOUT
        try:
            while not self._stop.is_set():
                rc = client.loop(timeout=TICK)
                if rc != mqtt.MQTT_ERR_SUCCESS or self._connack_failed:
                    if not self._had_connack and not self._connack_failed:
                        self._closed_before_connack()
                    break
                if self._session_ok:
                    self._service_guarded()
                elif time.monotonic() > deadline:
                    self._short_drops = 0
                    self._set_problem("warn", f"no MQTT answer (CONNACK) from "
                                      f"{self.cfg.host}:{self.cfg.port} within "
                                      f"{CONNACK_TIMEOUT:.0f} s: is it an MQTT broker?")
                    break
            if self._stop.is_set() and self._session_ok:
                self._goodbye()
        except (OSError, ValueError) as exc:
            self._set_problem(*describe_error(exc, self.cfg.host, self.cfg.port))
        finally:
            if self._session_ok:
                self._mark_disconnected(None)
            client.disconnect()   # closes the socket; paho keeps unacked messages for later
        return self._had_connack

    def _closed_before_connack(self) -> None:
        """The broker closed the connection before answering CONNECT (e.g. it wants a client
        certificate: Mosquitto then just closes the TLS connection)."""
        self._short_drops = 0
        error = self._paho_error or "connection closed"
        summary = f"{self.cfg.host}:{self.cfg.port} closed the connection before the MQTT " \
                  f"login ({error})"
        tls = self.cfg.tls
        if tls.enabled and tls.certfile is None and "ssl" in error.lower():
            self._set_problem("fail", summary + ": does the broker require a client "
                              "certificate (hias.tls.certfile, hias.tls.keyfile)?")
        else:
            self._set_problem("warn", summary)

    def _service_guarded(self) -> None:
        """_service, with journal (SQLite) or sensor errors logged once per kind, not fatal."""
        try:
            self._service()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._service_error:
                log.error("publishing step failed (retried every %.2f s): %s", TICK, text)
            self._service_error = text
        else:
            self._service_error = None

    def _service(self) -> None:
        """Between two loop() calls: replies, results, Life, status requests."""
        client = self._client
        assert client is not None
        while self._replies:
            self._publish(topics.NOTIFICATIONS, self._replies.popleft())
        if self._status_now.is_set():
            self._status_now.clear()
            client.publish(self.topics[topics.STATUS], "ONLINE", qos=QOS)
            self._publish_life()
        if time.monotonic() >= self._next_life:
            self._publish_life()
        for result in self.outbox.take():
            info = self._publish(topics.CLASSIFICATION,
                                 payloads.classification(result, self.cfg.model_name))
            if info is not None:
                self.outbox.published(info.mid, str(result["id"]))

    def _publish(self, channel: str, body: Dict[str, Any]) -> Optional[mqtt.MQTTMessageInfo]:
        assert self._client is not None
        info = self._client.publish(self.topics[channel], payloads.encode(body), qos=QOS)
        # NO_CONN: paho keeps the message and sends it after the reconnect (same mid).
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish on %s refused by the client: %s", channel,
                        mqtt.error_string(info.rc))
            return None
        self._count("published")
        return info

    def _publish_life(self) -> None:
        self._next_life = time.monotonic() + self.cfg.life_interval
        stats = self._stats.read()
        body = payloads.life(stats, self.cfg.latitude, self.cfg.longitude)
        self._publish(topics.LIFE, body)
        with self._lock:
            self._last_life = body
        self._count("life")

    def _goodbye(self) -> None:
        """Clean stop: OFFLINE (the Last Will is not sent after a clean DISCONNECT)."""
        client = self._client
        assert client is not None
        info = client.publish(self.topics[topics.STATUS], "OFFLINE", qos=QOS)
        end = time.monotonic() + GOODBYE_TIMEOUT
        while not info.is_published() and time.monotonic() < end:
            if client.loop(timeout=TICK) != mqtt.MQTT_ERR_SUCCESS:
                break
        log.info("disconnected from %s:%s (stopping)", self.cfg.host, self.cfg.port)

    def _mark_disconnected(self, reason: Any) -> None:
        """The session ended; `reason` is the broker's DISCONNECT reason code, if it sent one."""
        if not self._session_ok:
            return
        self._session_ok = False
        self.outbox.set_connected(False)
        with self._lock:
            since, self._connected_since = self._connected_since, None
            if self._state == "connected":
                self._state = "connecting"
        short = since is not None and time.time() - since < SHORT_SESSION
        self._short_drops = self._short_drops + 1 if short else 0
        if self._stop.is_set():
            return
        why = f": {reason}" if reason is not None else ""
        entity = self.cfg.entity
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            why += f" (another device using entity {entity!r} connected with the same client id)"
        elif self._short_drops >= 2:
            # Mosquitto closes the older connection, without a reason, when another client
            # connects with the same id; a broker restart fails the reconnect and resets this.
            why += f" right after connecting, again, while the broker accepts every reconnect " \
                   f"(possibly another device using entity {entity!r})"
        self._set_problem("warn", f"connection to {self.cfg.host}:{self.cfg.port} lost{why}")

    # ------------------------------------------------------------------ paho callbacks
    # They run inside client.loop() on the MQTT thread; an exception must not escape into paho.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            if reason_code.is_failure:
                self._connack_failed = True
                self._short_drops = 0
                self._set_problem("fail", f"{self.cfg.host}:{self.cfg.port} refused the login "
                                  f"of {self.cfg.username or '(no username)'}: {reason_code} "
                                  "(check hias.username and the password)")
                return
            self._session_ok = True
            self._had_connack = True
            with self._lock:
                self._problem = None
                self._retry_in = None
                self._state = "connected"
                self._connected_since = time.time()
                self._counts["connects"] += 1
            log.info("connected to %s:%s as %s (%s, MQTT %s), topic %s", self.cfg.host,
                     self.cfg.port, self.cfg.entity, "TLS" if self.cfg.tls.enabled else "plain TCP",
                     self.cfg.protocol, topics.base(self.cfg))
            client.subscribe(self.topics[topics.COMMANDS], qos=QOS)
            client.publish(self.topics[topics.STATUS], "ONLINE", qos=QOS)
            self._next_life = time.monotonic() + self.cfg.life_first_delay
            self.outbox.set_connected(True)
        except Exception:
            log.exception("unexpected error in on_connect")

    def _on_log(self, client, userdata, level, buf) -> None:
        if level == mqtt.MQTT_LOG_ERR and self._paho_error is None:
            self._paho_error = buf.removeprefix("failed to receive on socket: ")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            # Without a DISCONNECT from the broker paho reports "Unspecified error": say nothing.
            sent = flags.is_disconnect_packet_from_server and reason_code.is_failure
            self._mark_disconnected(reason_code if sent else None)
        except Exception:
            log.exception("unexpected error in on_disconnect")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        """PUBACK: the broker has the message; only now is the outbox row marked delivered.

        Under MQTT 5 a PUBACK can refuse the message (e.g. Not authorized by the ACL): the row
        stays undelivered and the outbox backs off. 3.1.1 PUBACKs carry no reason at all.
        """
        try:
            result_id = self.outbox.acked(mid)
            if result_id is None:
                return
            if reason_code.is_failure:
                self.outbox.refused()
                self._set_refusal(reason_code)
                self._count("refused")
                return
            if self.outbox.accepted():
                self._clear_refusal()
            self.journal.outbox_mark_delivered(result_id)
            self._count("delivered")
        except Exception as exc:
            log.error("cannot mark result delivered (it will be sent again): %s", exc)

    def _on_message(self, client, userdata, message) -> None:
        try:
            if message.topic != self.topics[topics.COMMANDS]:
                return
            self._count("commands")
            try:
                cmd = commands.parse(message.payload)
                if message.retain:   # replayed by the broker on every (re)connect
                    raise commands.CommandError(commands.RETAINED, cmd.name, cmd.request_id)
            except commands.CommandError as exc:
                self._count("commands_refused")
                if not (message.retain and message.payload == self._retained_seen):
                    log.warning("refused command: %s", exc)
                if message.retain:
                    self._retained_seen = message.payload
                self._replies.append(payloads.notification(exc.command, False, str(exc),
                                                           exc.request_id))
                return
            log.info("command %s received", cmd.name)
            if cmd.name == "status":
                self._status_now.set()
                self._replies.append(payloads.notification(cmd.name, True, "status published",
                                                           cmd.request_id))
                return
            try:
                self._jobs.put_nowait(cmd)
            except queue.Full:
                self._replies.append(payloads.notification(
                    cmd.name, False, "busy: too many commands waiting", cmd.request_id))
        except Exception:
            log.exception("unexpected error handling a command")

    # ------------------------------------------------------------------ command worker
    def _work(self) -> None:
        """Runs capture/reload off the MQTT thread (a model reload can take seconds)."""
        while not self._stop.is_set():
            try:
                cmd = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            if cmd is None:
                return
            try:
                ok, message = commands.run_on_daemon(self.daemon, cmd.name)
            except Exception as exc:
                log.error("command %s failed: %s", cmd.name, exc)
                ok, message = False, f"failed: {exc}"
            else:
                log.info("command %s: %s", cmd.name, message)
            self._replies.append(payloads.notification(cmd.name, ok, message, cmd.request_id))


def _iso(stamp: Optional[float]) -> Optional[str]:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
