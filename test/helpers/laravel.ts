import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import Echo from 'laravel-echo';
import { io, type Socket } from 'socket.io-client';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

// The two ends of a Laravel app, run for real: Laravel's own broadcasting
// component (Debian's php-laravel-framework) publishing through
// RedisBroadcaster, its /broadcasting/auth served by `php -S`, and the
// `laravel-echo` npm package with socket.io-client as the browser.

const run = promisify(execFile);
const FIXTURES = resolve(import.meta.dirname, '../fixtures/laravel');

/** The sessions test/fixtures/laravel/auth.php knows: cookie and CSRF token per user. */
export const SESSIONS = {
  alice: {
    cookie: 'laravel_session=session-alice',
    csrf: 'csrf-alice',
    id: 1,
    info: { id: 1, name: 'Alice' },
  },
  bob: { cookie: 'laravel_session=session-bob', csrf: 'csrf-bob', id: 2, info: { id: 2, name: 'Bob' } },
} as const;

export interface LaravelAuth {
  /** PUSHRELAY_ECHO_AUTH_URL */
  readonly url: string;
  stop(): Promise<void>;
}

/** `php -S` serving auth.php with workers, so a hanging call does not hold the others. */
export async function startLaravelAuth(): Promise<LaravelAuth> {
  const port = await freePort();
  const proc: ChildProcess = spawn('php', ['-S', `127.0.0.1:${port}`, resolve(FIXTURES, 'auth.php')], {
    env: { PATH: process.env.PATH, PHP_CLI_SERVER_WORKERS: '4' },
    stdio: 'ignore',
    // Its own process group: the workers go with it.
    detached: true,
  });
  const exited = once(proc, 'exit');
  const url = `http://127.0.0.1:${port}/broadcasting/auth`;
  await waitFor(async () => (await fetch(url, { method: 'GET' })).status === 404, {
    what: 'php -S auth endpoint',
  });
  return {
    url,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(-proc.pid!, 'SIGKILL');
      await exited;
    },
  };
}

/**
 * `broadcast()` as a Laravel app makes it: `eval` is RedisBroadcaster (EVAL
 * of its Lua loop), `publish` a PUBLISH per channel through the prefixed
 * phpredis connection. `socket` is the X-Socket-ID of the request (toOthers()).
 */
export async function laravelBroadcast(options: {
  port: number;
  prefix: string;
  /** `example`: examples/laravel's OrderShipped for the order in `data` ({id, user_id}); event and channels are the class's. */
  form?: 'eval' | 'publish' | 'example';
  event: string;
  channels: string[];
  data: Record<string, unknown>;
  socket?: string;
}): Promise<void> {
  const args = [
    resolve(FIXTURES, 'broadcast.php'),
    String(options.port),
    options.prefix,
    options.form ?? 'eval',
    options.event,
    options.channels.join(','),
    JSON.stringify(options.data),
  ];
  if (options.socket !== undefined) args.push(options.socket);
  await run('php', args, { env: { PATH: process.env.PATH } });
}

export interface EchoClient {
  readonly echo: Echo<'socket.io'>;
  /** Everything an Echo callback received, by `<channel>/<what>`. */
  readonly got: Map<string, unknown[]>;
  /** subscription_error(channel, status) as received. */
  readonly errors: [string, number][];
  seen(key: string): unknown[];
  socketId(): string | undefined;
  close(): void;
}

/** A browser tab of a Laravel app: laravel-echo's socket.io connector with the page's session cookie and CSRF token. */
export async function echoClient(
  url: string,
  session?: { cookie: string; csrf: string },
): Promise<EchoClient> {
  const echo = new Echo<'socket.io'>({
    broadcaster: 'socket.io',
    client: io,
    host: url,
    transports: ['websocket'],
    // Each its own object: Echo's default `auth` is shared between instances.
    auth: { headers: {} },
    csrfToken: session?.csrf ?? null,
    // What a browser sends with the WebSocket upgrade on the app's domain.
    extraHeaders: session ? { Cookie: session.cookie } : {},
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  } as never);
  const got = new Map<string, unknown[]>();
  const errors: [string, number][] = [];
  const socket = (echo.connector as unknown as { socket: Socket }).socket;
  socket.on('subscription_error', (channel: string, status: number) => errors.push([channel, status]));
  await waitFor(() => socket.connected, { what: 'Echo connected' });
  const seen = (key: string) => {
    let list = got.get(key);
    if (!list) {
      list = [];
      got.set(key, list);
    }
    return list;
  };
  return {
    echo,
    got,
    errors,
    seen,
    socketId: () => echo.socketId(),
    close: () => echo.disconnect(),
  };
}

/** Waits until a channel has `sockets` sockets cluster-wide (an Echo subscribe has no answer to wait for). */
export async function channelHas(
  nodeUrl: string,
  channel: string,
  sockets: number,
  readSecret: string,
): Promise<void> {
  await waitFor(
    async () => {
      const res = await fetch(`${nodeUrl}/v1/channels/${encodeURIComponent(channel)}/presence`, {
        headers: { authorization: `Bearer ${readSecret}` },
      });
      return ((await res.json()) as { sockets: number }).sockets >= sockets;
    },
    { what: `${sockets} sockets in ${channel}` },
  );
}
