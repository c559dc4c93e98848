import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { webhookSignature } from '../../src/webhooks/index.js';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { startInProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

const SECRET = 'webhook-secret-for-tests-0123456789';

interface Call {
  headers: IncomingMessage['headers'];
  body: string;
}

describe('offline webhook', () => {
  let receiver: Server;
  let calls: Call[] = [];
  /** Status codes the receiver answers with, in order; 200 once they run out. */
  let script: number[] = [];
  let node: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        calls.push({ headers: req.headers, body });
        res.writeHead(script.shift() ?? 200).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const { port } = receiver.address() as { port: number };
    node = await startInProcess({
      PUSHRELAY_OFFLINE_WEBHOOK: `http://127.0.0.1:${port}/pushrelay/offline`,
      PUSHRELAY_OFFLINE_WEBHOOK_SECRET: SECRET,
    });
  });
  afterAll(async () => {
    await node.stop();
    receiver.close();
  });

  it('calls the app, signed, when a targeted user has no socket online, and retries through failures', async () => {
    calls = [];
    script = [503, 500];
    const res = await post(`${node.url}/v1/publish`, {
      event: 'invoice',
      data: { n: 7 },
      users: ['offline-olga'],
    });
    expect(res.body.offline).toEqual(['offline-olga']);
    await waitFor(() => calls.length >= 3, { timeoutMs: 10_000 });
    await sleep(700);
    expect(calls).toHaveLength(3); // two failures, one success, then nothing more
    const delivery = calls[0]!.headers['x-pushrelay-delivery'];
    expect(calls.every((c) => c.headers['x-pushrelay-delivery'] === delivery)).toBe(true);
    expect(calls.map((c) => c.headers['x-pushrelay-attempt'])).toEqual(['1', '2', '3']);
    for (const c of calls) {
      const ts = c.headers['x-pushrelay-timestamp'] as string;
      expect(c.headers['x-pushrelay-signature']).toBe(webhookSignature(SECRET, ts, c.body));
    }
    expect(JSON.parse(calls[2]!.body)).toEqual({
      type: 'offline',
      users: ['offline-olga'],
      message: { id: res.body.id, event: 'invoice', ts: expect.any(Number), data: { n: 7 } },
      node: expect.any(String),
    });
  });

  it('names only the offline users, and is not called when everyone is online', async () => {
    const online = await connectClient(node.url, await token('online-otto'));
    calls = [];
    script = [];
    await post(`${node.url}/v1/publish`, { event: 'x', users: ['online-otto'] });
    await post(`${node.url}/v1/publish`, { event: 'y', users: ['online-otto', 'offline-olga'] });
    await waitFor(() => calls.length >= 1);
    await sleep(300);
    expect(calls).toHaveLength(1);
    expect(JSON.parse(calls[0]!.body)).toMatchObject({ users: ['offline-olga'], message: { event: 'y' } });
    online.close();
  });

  it('gives up at once on a 4xx other than 408 and 429', async () => {
    calls = [];
    script = [400];
    await post(`${node.url}/v1/publish`, { event: 'z', users: ['offline-olga'] });
    await waitFor(() => calls.length >= 1);
    await sleep(1200);
    expect(calls).toHaveLength(1);
  });

  it('is not called again for a repeated idempotent publish', async () => {
    calls = [];
    script = [];
    const body = { event: 'once', users: ['offline-olga'], id: 'webhook-once-1' };
    await post(`${node.url}/v1/publish`, body);
    await post(`${node.url}/v1/publish`, body);
    await waitFor(() => calls.length >= 1);
    await sleep(300);
    expect(calls).toHaveLength(1);
  });

  it('refuses a webhook URL without its signing secret at start', () => {
    expect(() => loadConfig({ PUSHRELAY_OFFLINE_WEBHOOK: 'https://app.example/hook' })).toThrow(ConfigError);
  });
});

describe('offline webhook in cluster mode', () => {
  let redis: RedisServer;
  let receiver: Server;
  let calls: Call[] = [];
  /** While set, calls are left unanswered (a hung app). */
  let hang = true;
  const hung: ServerResponse[] = [];
  let a: Awaited<ReturnType<typeof startInProcess>>;
  let b: Awaited<ReturnType<typeof startInProcess>>;
  beforeAll(async () => {
    redis = await startRedis();
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        calls.push({ headers: req.headers, body });
        if (hang) hung.push(res);
        else res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const { port } = receiver.address() as { port: number };
    const env = {
      REDIS_URL: redis.url,
      PUSHRELAY_OFFLINE_WEBHOOK: `http://127.0.0.1:${port}/pushrelay/offline`,
      PUSHRELAY_OFFLINE_WEBHOOK_SECRET: SECRET,
      // The lease a node holds on a call is this plus 5 s.
      PUSHRELAY_WEBHOOK_TIMEOUT_SECONDS: '1',
    };
    a = await startInProcess(env);
    b = await startInProcess(env);
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    for (const res of hung) res.destroy();
    receiver.closeAllConnections();
    receiver.close();
    await redis?.stop();
  });

  it('a call pending on a node that goes away is made by another node, with the same body and delivery id', async () => {
    calls = [];
    const res = await post(`${a.url}/v1/publish`, { event: 'invoice', data: { n: 8 }, users: ['gone-gus'] });
    expect(res.status).toBe(200);
    await waitFor(() => calls.length >= 1);
    await a.stop();
    const seen = calls.length;
    hang = false;
    await waitFor(() => calls.length > seen, {
      timeoutMs: 20_000,
      what: 'the call again, from the other node',
    });
    const last = calls.at(-1)!;
    expect(last.body).toBe(calls[0]!.body);
    expect(last.headers['x-pushrelay-delivery']).toBe(calls[0]!.headers['x-pushrelay-delivery']);
    const ts = last.headers['x-pushrelay-timestamp'] as string;
    expect(last.headers['x-pushrelay-signature']).toBe(webhookSignature(SECRET, ts, last.body));
    expect(JSON.parse(last.body)).toMatchObject({
      type: 'offline',
      users: ['gone-gus'],
      message: { id: res.body.id },
    });
  });
});
