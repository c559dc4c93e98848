import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { webhookSignature } from '../../src/webhooks/index.js';

/** An event as a lifecycle webhook receiver gets it. */
export interface HookEvent {
  id: string;
  type: string;
  ts: number;
  node: string;
  user?: string;
  channel?: string;
  user_info?: unknown;
  users?: string[];
  message?: { id: string; event: string; ts: number; data: unknown };
}

export interface Receiver {
  readonly url: string;
  /** Every event of every acknowledged call, in arrival order (repeats included). */
  readonly events: HookEvent[];
  /** Calls received (acknowledged or not), with their headers. */
  readonly calls: { headers: IncomingMessage['headers']; body: string; status: number }[];
  /**
   * How the next calls are answered: a status, or 'hang' (never answered).
   * 200 when unset.
   */
  answer: number | 'hang';
  /** Answers the calls left hanging with `status` (a 2xx records their events). */
  release(status: number): void;
  /** Events of one type (optionally about one user or channel). */
  of(type: string, about?: string): HookEvent[];
  close(): Promise<void>;
}

/**
 * A real HTTP server receiving webhook calls: it checks every signature as
 * an app would (a bad one is answered 401 and counted as a failure of the
 * test) and records the events of the calls it acknowledges.
 */
export async function startReceiver(secret: string): Promise<Receiver> {
  const hanging = new Map<ServerResponse, string>();
  const r: Receiver = {
    url: '',
    events: [],
    calls: [],
    answer: 200,
    of: (type, about) =>
      r.events.filter(
        (e) => e.type === type && (about === undefined || e.user === about || e.channel === about),
      ),
    release: (status) => {
      for (const [res, body] of hanging) {
        if (status >= 200 && status < 300)
          r.events.push(...(JSON.parse(body) as { events: HookEvent[] }).events);
        res.writeHead(status).end();
      }
      hanging.clear();
    },
    close: async () => {
      for (const res of hanging.keys()) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const ts = String(req.headers['x-pushrelay-timestamp']);
      const valid = req.headers['x-pushrelay-signature'] === webhookSignature(secret, ts, body);
      const answer = valid ? r.answer : 401;
      r.calls.push({ headers: req.headers, body, status: answer === 'hang' ? 0 : answer });
      if (answer === 'hang') {
        hanging.set(res, body);
        return;
      }
      if (answer >= 200 && answer < 300)
        r.events.push(...(JSON.parse(body) as { events: HookEvent[] }).events);
      res.writeHead(answer).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (r as { url: string }).url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hooks`;
  return r;
}
