import { type Server as HttpServer, type IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { Server } from 'socket.io';
import { WebSocketServer } from 'ws';
import type { Config } from '../config/index.js';
import { ERRORS, type ErrorCode, isRelayError, RelayError } from '../errors.js';
import type { Ingest } from '../ingest/ingest.js';
import { BROADCAST_CHANNEL, NATIVE_ROOM, userChannel } from '../ingest/message.js';
import type { Metrics } from '../metrics/index.js';
import type { ConnectedEvent, RelayServer, RelaySocket } from './events.js';
import { answerer } from './handlers/answer.js';
import { publishHandler } from './handlers/publish.js';
import { refreshHandler } from './handlers/refresh.js';
import { parseSince, subscribeHandler } from './handlers/subscribe.js';
import { unsubscribeHandler } from './handlers/unsubscribe.js';
import { disconnect, type Hub } from './hub.js';
import { fullBucket, take } from './limits.js';
import type { EchoFrontEnd } from './protocols/echo/index.js';
import { channelAllowed, type TokenVerifier } from './tokens.js';

const NO_AUTH = Object.freeze({});

/** Why the engine refused a connection before any Socket.IO handshake; undefined admits it. */
export type Admission = (req: IncomingMessage) => ErrorCode | undefined;

export function createSocketServer(
  httpServer: HttpServer,
  config: Config,
  admit: Admission,
  metrics?: Metrics,
): RelayServer {
  const anyOrigin = config.corsOrigins.length === 0 || config.corsOrigins.includes('*');
  const io: RelayServer = new Server(httpServer, {
    path: '/socket.io',
    // Serves socket.io-client's browser bundle at /socket.io/socket.io.min.js, so a page needs no CDN.
    serveClient: true,
    maxHttpBufferSize: config.maxPayloadBytes,
    // A handshake that does not authenticate in time is closed (it holds no slot meanwhile).
    connectTimeout: config.preauthTimeoutMs,
    perMessageDeflate: false,
    // ws from 8.22 on drops a frame's mask once the payload is unmasked; engine.io's own
    // ws (8.21) keeps it, a view into the read buffer, until the client's next frame: on an
    // idle socket that pins the buffer of the CONNECT frame (with its JWT) for 25 s or more.
    wsEngine: WebSocketServer,
    // Credentialed, so a browser page on another origin sends the load balancer's affinity cookie
    // with each long-polling request (io(url, { withCredentials: true })). The relay itself reads
    // no cookie: identity is the token, so this lets a page do nothing it could not do before.
    cors: { origin: anyOrigin ? true : config.corsOrigins, credentials: true },
    allowRequest: (req, callback) => {
      const refused = admit(req);
      if (refused === undefined) return callback(null, true);
      // Refused before any Socket.IO handshake, so the connect middleware never counts these.
      metrics?.socketConnects.inc({ outcome: refused });
      callback(ERRORS[refused].message, false);
    },
  });
  // Registered after engine.io's own CORS middleware, so it runs last.
  io.engine.use(releaseUpgradeRequest);
  return io;
}

/**
 * A WebSocket upgrade's response stand-in (engine.io's WebSocketResponse,
 * what its middlewares get as `res`) keeps the IncomingMessage for the
 * connection's life through a close listener on the TCP socket, though only
 * middlewares read it. Once they all ran (and with them the upgrade, which
 * completes in the same turn), it lets go, so a native socket's request can
 * be freed (see `releaseRequest`). A polling request's real response is left alone.
 */
function releaseUpgradeRequest(_req: IncomingMessage, res: unknown, next: (err?: unknown) => void): void {
  next();
  if (!(res instanceof ServerResponse)) (res as { req: IncomingMessage | null }).req = null;
}

/**
 * A native socket's IncomingMessage is read for its handshake (built when the
 * socket is made) and by admission (the client's address, when its engine
 * connection opened), never after: the engine connection lets go of it (as
 * Socket.IO's memory guide suggests), which frees it with its
 * dictionary-mode properties, ~2.5 KB per idle connection. Echo sockets keep
 * theirs (cookies for the app's auth endpoint, their address for the
 * per-address cap). Socket.IO closes a connection that sends another
 * CONNECT '/' once one is connected, and the relay serves no other namespace,
 * so no later socket is made from it.
 */
function releaseRequest(socket: RelaySocket): void {
  (socket.conn as unknown as { request: IncomingMessage | null }).request = null;
}

/** The Origin check that stops cross-site WebSocket hijacking: browsers always send Origin, other clients may not. */
export function originAllowed(config: Config, origin: string | undefined): boolean {
  if (origin === undefined) return true;
  if (config.corsOrigins.length === 0 || config.corsOrigins.includes('*')) return true;
  return config.corsOrigins.includes(origin);
}

export interface RealtimeDeps {
  readonly config: Config;
  readonly hub: Hub;
  readonly ingest: Ingest;
  readonly verify: TokenVerifier;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** PUSHRELAY_ECHO=on: sockets without a token speak Laravel Echo's protocol. */
  readonly echo?: EchoFrontEnd;
  /** Whether an authenticated socket may take a connection slot; undefined admits it. */
  readonly admit?: (socket: RelaySocket) => ErrorCode | undefined;
}

/** Handshake authentication, the connection's own channels, and one handler per client event. */
export function attachRealtime(io: RelayServer, deps: RealtimeDeps): void {
  const { config, hub, metrics, log } = deps;
  const allowed = (socket: RelaySocket, channel: string) =>
    config.namespace(channel).public || channelAllowed(socket.data.patterns, channel);

  const expire = (socket: RelaySocket) => {
    if (socket.data.exp * 1000 <= Date.now()) disconnect(socket, 'token_expired');
    else armExpiry(socket);
  };
  const expiries = new ExpiryWheel(expire);
  const armExpiry = (socket: RelaySocket) => expiries.arm(socket);

  /** Takes a connection slot for an authenticated (or Echo) socket, or refuses it. */
  const takeSlot = (socket: RelaySocket, next: (err?: Error) => void) => {
    const refused = deps.admit?.(socket);
    if (refused === undefined) return next();
    metrics.socketConnects.inc({ outcome: refused });
    const error = new Error(ERRORS[refused].message) as Error & { data: { code: ErrorCode } };
    error.data = { code: refused };
    next(error);
  };

  io.use((socket, next) => {
    // Echo sockets carry no token; they take a slot like any other, once connected.
    if (deps.echo?.admit(socket)) return takeSlot(socket, next);
    deps.verify((socket.handshake.auth as Record<string, unknown> | undefined)?.token).then(
      (claims) => {
        // Verified: keeping the token would cost every socket its length for its whole life.
        const { since } = socket.handshake.auth as Record<string, unknown>;
        socket.handshake.auth = since === undefined ? NO_AUTH : { since };
        socket.data.user = claims.user;
        socket.data.exp = claims.exp;
        socket.data.patterns = claims.patterns;
        if (claims.userInfo !== undefined) socket.data.userInfo = claims.userInfo;
        if (claims.watch !== undefined) socket.data.watch = claims.watch;
        takeSlot(socket, next);
      },
      (err: unknown) => {
        const e = isRelayError(err) ? err : new RelayError('token_invalid');
        metrics.socketConnects.inc({ outcome: e.code });
        const error = new Error(e.message) as Error & { data: { code: ErrorCode } };
        error.data = { code: e.code };
        next(error);
      },
    );
  });

  // Built once and shared by every socket (each gets its socket as `this`),
  // so a connection pays for its listener slots, not for closures of its own.
  const listeners: [string, (this: RelaySocket, ...args: unknown[]) => void][] = [
    [
      'subscribe',
      answerer(
        'subscribe',
        subscribeHandler({ hub, maxChannels: config.maxChannels, allowed }),
        metrics,
        log,
      ),
    ],
    ['unsubscribe', answerer('unsubscribe', unsubscribeHandler(hub, config.maxChannels), metrics, log)],
    [
      'publish',
      answerer(
        'publish',
        publishHandler({
          ingest: deps.ingest,
          namespace: config.namespace,
          allowed,
          maxJsonDepth: config.maxJsonDepth,
        }),
        metrics,
        log,
      ),
    ],
    [
      'refresh',
      answerer('refresh', refreshHandler({ verify: deps.verify, hub, allowed, armExpiry }), metrics, log),
    ],
  ];
  function onDisconnect(this: RelaySocket, reason: string): void {
    expiries.disarm(this);
    // Disconnects the relay causes are counted under its own reason, not Socket.IO's generic one.
    metrics.socketDisconnects.inc({ reason: this.data.disconnectReason ?? reason });
  }

  // Every packet a client sends costs a token, whatever its event (unknown
  // events are parsed before they are ignored): a flooding socket gets
  // rate_limited answers instead of the node's CPU. The bucket is made at the
  // socket's first packet (full, as it would be by then), so idle sockets keep none.
  const rate = config.socketRateLimit;
  const admitPacket = (socket: RelaySocket, packet: unknown[]): boolean => {
    socket.data.bucket ??= fullBucket(rate * 2);
    if (take(socket.data.bucket, rate, rate * 2)) return true;
    metrics.rateLimited.inc({ scope: 'socket' });
    const ack = packet[packet.length - 1];
    if (typeof ack === 'function') {
      const error = new RelayError('rate_limited', `more than ${rate} requests per second on this socket`, 1);
      (ack as (a: unknown) => void)({ ok: false, error: error.body() });
    }
    return false;
  };
  const handlers = new Map(listeners);
  const runPacket = (socket: RelaySocket, packet: unknown[]): void => {
    // As Socket.IO's own dispatch: on the next tick, and not after a disconnect.
    if (!socket.connected) return;
    handlers.get(packet[0] as string)?.apply(socket, packet.slice(1));
  };
  // A native socket's packets reach their handlers through this one shared
  // any-listener (rate limit, then the event's handler) instead of a
  // middleware closure and four listener slots per socket.
  function onPacket(this: RelaySocket, ...packet: unknown[]): void {
    if (admitPacket(this, packet)) process.nextTick(runPacket, this, packet);
  }
  // Socket.IO's onAny() gives each socket its own listener array, which V8
  // sizes for 17 entries (~190 bytes per idle connection). Every native socket
  // has the same one listener, so they share one frozen array: Socket.IO only
  // reads it (onevent copies it before calling); the relay never calls
  // onAny()/offAny(listener) on a native socket, which would edit it (and throw).
  const anyListeners: readonly ((...args: unknown[]) => void)[] = Object.freeze([
    onPacket as (...args: unknown[]) => void,
  ]);

  io.on('connection', (socket) => {
    metrics.socketConnects.inc({ outcome: 'ok' });
    const emitter = socket as unknown as { on(e: string, l: (...args: unknown[]) => void): unknown };
    emitter.on('disconnect', onDisconnect as (...args: unknown[]) => void);
    if (socket.data.echo) {
      socket.use((packet, next) => {
        if (admitPacket(socket, packet)) next();
      });
      deps.echo?.attach(socket);
      return;
    }
    if (deps.echo) socket.join(NATIVE_ROOM);
    (socket as unknown as { _anyListeners: typeof anyListeners })._anyListeners = anyListeners;
    releaseRequest(socket);
    armExpiry(socket);
    void joinOwnChannels(socket, deps);
  });
}

/**
 * Every socket is in its user's channel and the broadcast channel, recovered
 * from `auth.since` like a subscribe. `pushrelay:connected` tells the client
 * it is in, and where it stands.
 */
async function joinOwnChannels(socket: RelaySocket, deps: RealtimeDeps): Promise<void> {
  const own = userChannel(socket.data.user);
  let since: ReturnType<typeof parseSince> = {};
  try {
    since = parseSince((socket.handshake.auth as Record<string, unknown> | undefined)?.since);
  } catch {
    // A malformed since recovers nothing; the answer says recovered: false.
  }
  try {
    const watched = socket.data.watch;
    const [mine, broadcast, watching] = await Promise.all([
      deps.hub.attach(socket, own, since[own]),
      deps.hub.attach(socket, BROADCAST_CHANNEL, since[BROADCAST_CHANNEL]),
      watched === undefined || watched === own ? undefined : deps.hub.watch(socket, watched),
    ]);
    if (socket.disconnected) return;
    const event: ConnectedEvent = {
      user: socket.data.user,
      node: deps.config.nodeId,
      expiresAt: socket.data.exp,
      channels: {
        [own]: deps.hub.answerNow(own, mine),
        [BROADCAST_CHANNEL]: deps.hub.answerNow(BROADCAST_CHANNEL, broadcast),
        ...(watched !== undefined && watching !== undefined
          ? { [watched]: deps.hub.answerNow(watched, watching) }
          : {}),
      },
    };
    socket.emit('pushrelay:connected', event);
  } catch (err) {
    deps.log.warn({ err: (err as Error).message, user: socket.data.user }, 'could not set up a new socket');
    if (socket.connected) disconnect(socket, 'unavailable');
  }
}

/**
 * Token expiry for every socket of a node from one timer: sockets are kept by
 * the second their token expires in, and a tick once a second (running only
 * while some socket waits) hands over those whose second has come, so a
 * socket is ended within a second after its `exp`. A Timeout per socket cost
 * each idle connection ~150 bytes of heap.
 */
class ExpiryWheel {
  private readonly due = new Map<number, Set<RelaySocket>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly onDue: (socket: RelaySocket) => void) {}

  /** (Re)arms the socket for its current `data.exp`. */
  arm(socket: RelaySocket): void {
    this.disarm(socket);
    const second = Math.ceil(socket.data.exp);
    if (second * 1000 <= Date.now()) {
      setTimeout(this.onDue, 0, socket).unref();
      return;
    }
    let sockets = this.due.get(second);
    if (sockets === undefined) {
      sockets = new Set();
      this.due.set(second, sockets);
    }
    sockets.add(socket);
    socket.data.expirySecond = second;
    this.timer ??= setInterval(() => this.tick(), 1000).unref();
  }

  disarm(socket: RelaySocket): void {
    const second = socket.data.expirySecond;
    if (second === undefined) return;
    socket.data.expirySecond = undefined;
    const sockets = this.due.get(second);
    if (sockets?.delete(socket) && sockets.size === 0) this.due.delete(second);
    this.stopIfIdle();
  }

  private tick(): void {
    const now = Date.now();
    for (const [second, sockets] of this.due) {
      if (second * 1000 > now) continue;
      this.due.delete(second);
      for (const socket of sockets) {
        socket.data.expirySecond = undefined;
        this.onDue(socket);
      }
    }
    this.stopIfIdle();
  }

  private stopIfIdle(): void {
    if (this.due.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
