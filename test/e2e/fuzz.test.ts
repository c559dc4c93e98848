import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { startProcess } from '../helpers/nodes.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Thousands of random and mutated inputs at a real node process: no answer
// may be a 5xx, the process must stay up, and it must not leak file
// descriptors. Seeded, so a failure reproduces (FUZZ_SEED=<n>).

const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
const HTTP_CASES = 2500;
const SOCKET_FRAMES = 2000;

function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, pick };
}

type Rng = ReturnType<typeof prng>;

const NASTY_STRINGS = [
  '',
  ' ',
  '__proto__',
  'constructor',
  'user:alice',
  '$broadcast',
  'a'.repeat(300),
  '\u0000',
  '\ud800',
  '😀',
  '../../etc/passwd',
  'connect',
  'disconnect',
  'pushrelay:connected',
  'order:*',
  '{tag}',
  '%00',
  '\n',
];

function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 6 : 8)) {
    case 0:
      return r.pick(NASTY_STRINGS);
    case 1:
      return r.int(2) ? r.int(1e9) : r.pick([-1, 0, 1e308, -0, 2 ** 53 + 1, 0.1]);
    case 2:
      return r.int(2) === 1;
    case 3:
      return null;
    case 4:
      return Math.random().toString(36).repeat(r.int(20));
    case 5:
      return r.pick(['alice', 'bob', 'news', 'order:42', 'x']);
    case 6:
      return Array.from({ length: r.int(6) }, () => randomValue(r, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: r.int(6) }, () => [r.pick(FIELDS), randomValue(r, depth + 1)]),
      );
  }
}

const FIELDS = [
  'event',
  'data',
  'users',
  'channels',
  'broadcast',
  'except_users',
  'id',
  'messages',
  'extra',
  '__proto__',
];

function randomBody(r: Rng): string {
  const valid = JSON.stringify({
    event: 'fuzz',
    data: { n: r.int(100) },
    users: ['alice'],
    id: `f${r.int(1e6)}`,
  });
  switch (r.int(6)) {
    case 0:
      return valid;
    case 1: {
      // Flip, delete or insert characters of a valid body.
      const chars = [...valid];
      for (let i = 0; i < 1 + r.int(5); i++) {
        const at = r.int(chars.length);
        const op = r.int(3);
        if (op === 0) chars[at] = String.fromCharCode(r.int(0x3000));
        else if (op === 1) chars.splice(at, 1);
        else chars.splice(at, 0, r.pick(['{', '[', '"', '\\', ',', ':', '}', ']']));
      }
      return chars.join('');
    }
    case 2:
      return valid.slice(0, r.int(valid.length));
    case 3:
      return JSON.stringify(randomValue(r));
    case 4:
      return JSON.stringify(
        Object.fromEntries(FIELDS.filter(() => r.int(2)).map((f) => [f, randomValue(r)])),
      );
    default:
      return new URLSearchParams(
        FIELDS.filter(() => r.int(2)).map((f): [string, string] => [
          r.int(3) ? f : `${f}[${r.pick(['', '0', 'x', '__proto__'])}]`,
          String(randomValue(r)),
        ]),
      ).toString();
  }
}

const ROUTES = [
  ['POST', '/v1/publish'],
  ['POST', '/v1/batch'],
  ['POST', '/'],
  ['GET', '/?message=hi'],
  ['POST', '/message/alert/alice'],
  ['POST', '/message/%E0%A4%A/..'],
  ['GET', '/v1/users/alice/presence'],
  ['GET', '/v1/channels/news/presence'],
  ['GET', '/v1/channels/news/history?since=-1&limit=99999'],
  ['POST', '/v1/users/alice/subscribe'],
  ['DELETE', '/v1/publish'],
  ['POST', '/v1/publish?x=%ZZ'],
] as const;
const CONTENT_TYPES = [
  'application/json',
  'application/x-www-form-urlencoded',
  'text/plain',
  'application/json; charset=utf-16',
  'multipart/form-data; boundary=x',
  '',
];

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

describe('fuzzing a running node', () => {
  let node: Awaited<ReturnType<typeof startProcess>>;
  let baseline: number;
  beforeAll(async () => {
    node = await startProcess({ PUSHRELAY_RATE_LIMIT: '0', PUSHRELAY_SOCKET_RATE_LIMIT: '100000' });
    const warm = await connectClient(node.url, await token('warmup'));
    warm.close();
    await sleep(300);
    baseline = fdCount(node.proc.pid!);
  });
  afterAll(() => node.stop());

  it(`answers ${HTTP_CASES} random and mutated HTTP requests without a 5xx`, async () => {
    const r = prng(SEED);
    const statuses = new Map<number, number>();
    const fivexx: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < HTTP_CASES) {
        next++;
        const [method, path] = r.pick(ROUTES);
        const body = method === 'GET' || method === 'DELETE' ? undefined : randomBody(r);
        const contentType = r.pick(CONTENT_TYPES);
        // No keep-alive: every connection the fuzzer opens is closed, so what is left open afterwards is the node's.
        const headers: Record<string, string> = {
          authorization: `Bearer ${r.int(10) ? KEY.secret : 'wrong'}`,
          connection: 'close',
        };
        if (contentType && body !== undefined) headers['content-type'] = contentType;
        const res = await fetch(`${node.url}${path}`, { method, headers, body });
        await res.arrayBuffer();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status >= 500) fivexx.push(`${method} ${path} ${contentType} ${body?.slice(0, 200)}`);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    console.log('fuzz HTTP statuses:', Object.fromEntries([...statuses].sort()));
    expect(fivexx).toEqual([]);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(50); // the valid ones still go through
  });

  it(`survives ${SOCKET_FRAMES} random and mutated Socket.IO frames`, async () => {
    const r = prng(SEED + 1);
    const jwt = await token('fuzzer', { channels: ['*'] });
    let sent = 0;
    let connections = 0;
    const frame = (): string | Buffer => {
      const valid = [
        `42["subscribe",{"channels":["news"]}]`,
        `420["subscribe",{"channels":["news"],"since":{"news":{"offset":0,"epoch":"x"}}}]`,
        `421["publish",{"channel":"chat:1","event":"say","data":{"t":"hi"}}]`,
        `422["refresh",{"token":"nope"}]`,
        `423["unsubscribe",{"channels":["news"]}]`,
      ];
      switch (r.int(7)) {
        case 0:
          return r.pick(valid);
        case 1: {
          const chars = [...r.pick(valid)];
          for (let i = 0; i < 1 + r.int(4); i++)
            chars[r.int(chars.length)] = String.fromCharCode(r.int(0x3000));
          return chars.join('');
        }
        case 2:
          return `42${JSON.stringify([r.pick(['subscribe', 'publish', 'refresh', 'unsubscribe', 'x', '']), randomValue(r)])}`;
        case 3:
          return `4${r.int(10)}${JSON.stringify(randomValue(r))}`;
        case 4:
          return `451-["subscribe",{"_placeholder":true,"num":${r.int(3)}}]`;
        case 5:
          return Buffer.from(Array.from({ length: r.int(64) }, () => r.int(256)));
        default:
          return `${r.int(10)}${String(randomValue(r))}`;
      }
    };
    while (sent < SOCKET_FRAMES) {
      const ws = new WebSocket(`${node.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
      connections++;
      await new Promise<void>((resolve) => {
        let open = false;
        ws.on('error', () => resolve());
        ws.on('close', () => resolve());
        ws.on('message', (raw) => {
          const text = raw.toString();
          if (text.startsWith('0') && !open) {
            open = true;
            ws.send(`40${JSON.stringify({ token: jwt })}`);
          } else if (text.startsWith('40')) {
            // Connected: fire frames until the server hangs up on one.
            for (let i = 0; i < 50 && sent < SOCKET_FRAMES && ws.readyState === WebSocket.OPEN; i++) {
              ws.send(frame());
              sent++;
            }
            setTimeout(() => {
              ws.close();
              resolve();
            }, 20);
          }
        });
      });
    }
    console.log('fuzz socket frames:', { sent, connections });
    expect((await fetch(`${node.url}/healthz`)).status).toBe(200);
    // A well-behaved client still gets through.
    const ok = await connectClient(node.url, await token('after-fuzz', { channels: ['news'] }));
    expect((await ok.request<{ ok: boolean }>('subscribe', { channels: ['news'] })).ok).toBe(true);
    ok.close();
  });

  it('leaks no file descriptors', async () => {
    expect(node.proc.exitCode).toBeNull();
    const fds = await waitFor(
      () => {
        const n = fdCount(node.proc.pid!);
        return n <= baseline + 5 ? n : undefined;
      },
      { timeoutMs: 10_000, what: `descriptors back near ${baseline}` },
    ).catch(() => fdCount(node.proc.pid!));
    console.log('fuzz file descriptors:', { baseline, after: fds });
    expect(fds).toBeLessThanOrEqual(baseline + 5);
  });
});
