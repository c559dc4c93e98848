import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { INGEST_SETTLED_MS } from '../helpers/ingest.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startInProcess, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// Rails and AnyCable publishing as they already do. ActionCable is Debian's
// ruby-actioncable 6.1 itself (examples/rails/actioncable/broadcast.rb), its
// Redis adapter configured with a channel_prefix. AnyCable's messages are the
// bytes its Ruby adapters produce, made by Ruby's own to_json from the same
// expressions as anycable-rb lib/anycable/broadcast_adapters/base.rb:
//   broadcast:  {stream: stream, data: payload, meta: options}.compact.to_json
//   batch:      [ {stream:, data:, meta:}.compact, ... ].to_json
//   command:    {command: command, payload: payload}.to_json
// where `payload` is the message already encoded as JSON text; redis.rb
// PUBLISHes it on `redis_channel` (__anycable__), redisx.rb does
// `redis_conn.xadd(channel, {payload: payload})`, and http.rb POSTs it with
// Content-Type application/json and `Authorization: Bearer <broadcast_key>`,
// expecting 201 Created.

const run = promisify(execFile);
const BROADCAST = resolve(import.meta.dirname, '../../examples/rails/actioncable/broadcast.rb');
const KEY = 'anycable-broadcast-key-0123456789abcdef';

/** Ruby's to_json of a Ruby expression: the exact bytes a Ruby adapter sends. */
async function rubyJson(expression: string): Promise<string> {
  const { stdout } = await run('ruby', ['-rjson', '-e', `print(${expression})`]);
  return stdout;
}

describe('Rails ActionCable and AnyCable publishers', () => {
  let redis: RedisServer;
  let r: Redis;
  let a: RelayNode & { relay: { sources: { pubsub?: unknown } } };
  let b: RelayNode;
  let client: TestClient;
  const streams = ['chat_42', 'chat:Z2lkOi8vc2hvcC9Sb29tLzQy', 'ac:batch', 'ac:http', 'ac:redisx'];
  beforeAll(async () => {
    redis = await startRedis();
    r = redis.client();
    const env = {
      REDIS_URL: redis.url,
      PUSHRELAY_ACTIONCABLE_PREFIX: 'shop_test',
      PUSHRELAY_ANYCABLE: 'on',
      PUSHRELAY_ANYCABLE_BROADCAST_KEY: KEY,
      PUSHRELAY_NAMESPACES: JSON.stringify({
        chat: { public: true },
        chat_42: { public: true },
        ac: { public: true },
      }),
    };
    a = await startInProcess(env);
    b = await startInProcess(env);
    // A socket.io client on node B; the broadcasts may be handled by either node.
    client = await connectClient(b.url, await token('reader'));
    expect(await client.request('subscribe', { channels: streams })).toMatchObject({ ok: true });
    await waitFor(async () => (await scrape(a.url)).value('pushrelay_ingest_members') === 2, {
      what: 'both nodes sharing raw ingest',
    });
  });
  afterAll(async () => {
    client?.close();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  it('ActionCable.server.broadcast and broadcast_to from Rails arrive as event "message" on the stream’s channel', async () => {
    const { stdout } = await run('ruby', [BROADCAST, 'chat_42', '{"text":"hello from Rails","n":[1,2]}'], {
      env: { PATH: process.env.PATH, REDIS_URL: redis.url, CHANNEL_PREFIX: 'shop_test', ROOM: '42' },
    });
    expect(stdout.trim()).toBe('chat:Z2lkOi8vc2hvcC9Sb29tLzQy'); // ChatChannel.broadcasting_for(room)
    const got = await client.waitForEvent('message', 2);
    expect(got.map((e) => [e.meta!.channel, e.data])).toEqual(
      expect.arrayContaining([
        ['chat_42', { text: 'hello from Rails', n: [1, 2] }],
        ['chat:Z2lkOi8vc2hvcC9Sb29tLzQy', { text: 'hello from Rails', n: [1, 2] }],
      ]),
    );
  });

  it('an ActionCable stream name outside pushrelay’s channel characters is counted and dropped', async () => {
    const refusedCount = async () =>
      (await Promise.all([a, b].map((n) => scrape(n.url)))).reduce(
        (s, m) =>
          s + m.value('pushrelay_ingest_malformed_total', { source: 'actioncable', code: 'invalid_channel' }),
        0,
      );
    const start = await refusedCount();
    await run('ruby', [BROADCAST, 'chat room {1}', '{"text":"x"}'], {
      env: { PATH: process.env.PATH, REDIS_URL: redis.url, CHANNEL_PREFIX: 'shop_test' },
    });
    await waitFor(async () => (await refusedCount()) === start + 1);
  });

  it('AnyCable’s Redis adapter: a broadcast, one with meta, a batch in order, and a command', async () => {
    const n = client.events('message').length;
    const one = await rubyJson(
      `{stream: "ac:batch", data: {text: "single"}.to_json, meta: nil}.compact.to_json`,
    );
    expect(one).toBe('{"stream":"ac:batch","data":"{\\"text\\":\\"single\\"}"}');
    const withMeta = await rubyJson(
      `{stream: "ac:batch", data: {text: "meta"}.to_json, meta: {exclude_socket: "abc"}}.compact.to_json`,
    );
    const batch = await rubyJson(
      `[1, 2, 3].map { |i| {stream: "ac:batch", data: {n: i}.to_json}.compact }.to_json`,
    );
    const command = await rubyJson(
      `{command: "disconnect", payload: {identifier: "user:1", reconnect: false}}.to_json`,
    );
    for (const msg of [one, withMeta, batch, command]) await r.publish('__anycable__', msg);
    const got = (await client.waitForEvent('message', n + 5)).slice(n).map((e) => e.data);
    // Pub/sub keeps no order between messages (each may be handled by another
    // node: README, "Delivery guarantees"); the parts of one batch keep theirs.
    expect(got).toHaveLength(5);
    expect(got).toEqual(expect.arrayContaining([{ text: 'single' }, { text: 'meta' }]));
    expect(got.filter((d) => typeof d === 'object' && d !== null && 'n' in d)).toEqual([
      { n: 1 },
      { n: 2 },
      { n: 3 },
    ]);
    await waitFor(async () => {
      const m = await Promise.all([a, b].map((x) => scrape(x.url)));
      const ignored = (reason: string) =>
        m.reduce((s, x) => s + x.value('pushrelay_ingest_ignored_total', { source: 'anycable', reason }), 0);
      return ignored('command') === 1 && ignored('meta') === 1;
    });
  });

  it('AnyCable’s redisx adapter: XADD __anycable__ * payload <json>, through the stream machinery in order', async () => {
    const n = client.events('message').length;
    const payloads = (
      await rubyJson(`(0...20).map { |i| {stream: "ac:redisx", data: {i: i}.to_json}.to_json }.join("\\n")`)
    ).split('\n');
    for (const payload of payloads) await r.xadd('__anycable__', '*', 'payload', payload);
    const got = (await client.waitForEvent('message', n + 20)).slice(n);
    expect(got.map((e) => e.data)).toEqual([...Array(20).keys()].map((i) => ({ i })));
    const groups = (await r.xinfo('GROUPS', '__anycable__')) as (string | number)[][];
    expect(groups[0]).toEqual(expect.arrayContaining(['name', 'pushrelay', 'pending', 0]));
  });

  it('AnyCable’s HTTP adapter: POST /_broadcast with the Bearer key answers 201; a wrong key 401, a bad body 400', async () => {
    const n = client.events('message').length;
    const body = await rubyJson(`{stream: "ac:http", data: {text: "over http"}.to_json}.compact.to_json`);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${KEY}` };
    const res = await fetch(`${a.url}/_broadcast`, { method: 'POST', headers, body });
    expect(res.status).toBe(201);
    expect((await client.waitForEvent('message', n + 1)).at(-1)!.data).toEqual({ text: 'over http' });
    const wrong = await post(`${a.url}/_broadcast`, body, { secret: 'not-the-key' });
    expect([wrong.status, (wrong.body.error as { code: string }).code]).toEqual([401, 'invalid_key']);
    const none = await post(`${a.url}/_broadcast`, body, { secret: '' });
    expect([none.status, (none.body.error as { code: string }).code]).toEqual([401, 'unauthorized']);
    const bad = await post(`${a.url}/_broadcast`, [{ stream: 'no spaces allowed', data: '{}' }], {
      secret: KEY,
    });
    expect([bad.status, (bad.body.error as { code: string }).code]).toEqual([400, 'invalid_body']);
  });
});

describe('ActionCable broadcasts to one stream, two relay processes', () => {
  let redis: RedisServer;
  let nodes: RelayNode[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    const env = {
      REDIS_URL: redis.url,
      PUSHRELAY_ACTIONCABLE_PREFIX: 'shop_test',
      PUSHRELAY_NAMESPACES: JSON.stringify({ chat_42: { public: true } }),
    };
    nodes = [await startProcess(env), await startProcess(env)];
    await waitFor(async () => (await scrape(nodes[0]!.url)).value('pushrelay_ingest_members') === 2, {
      what: 'both nodes sharing raw ingest',
    });
    // Past the switch and its claim window each node handles exactly what it owns (helpers/ingest.ts).
    await sleep(INGEST_SETTLED_MS);
  }, 45_000);
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  it('arrive in the order Rails sent them, whichever node handles them', async () => {
    const client = await connectClient(nodes[1]!.url, await token('reader'));
    expect(await client.request('subscribe', { channels: ['chat_42'] })).toMatchObject({ ok: true });
    const script = `
      require "logger"; require "active_support/all"; require "action_cable"
      ActionCable.server.config.cable = ActiveSupport::HashWithIndifferentAccess.new(
        adapter: "redis", url: ENV.fetch("REDIS_URL"), channel_prefix: "shop_test")
      ActionCable.server.config.logger = Logger.new(nil)
      400.times { |i| ActionCable.server.broadcast("chat_42", {seq: i}) }
      ActionCable.server.pubsub.shutdown`;
    await run('ruby', ['-e', script], { env: { PATH: process.env.PATH, REDIS_URL: redis.url } });
    const got = await client.waitForEvent('message', 400);
    expect(got.map((e) => (e.data as { seq: number }).seq)).toEqual([...Array(400).keys()]);
    // What keeps that order under any load: one node takes the whole stream.
    const published = await Promise.all(
      nodes.map(async (n) =>
        (await scrape(n.url)).value('pushrelay_ingest_messages_total', {
          source: 'actioncable',
          outcome: 'published',
        }),
      ),
    );
    expect(published.sort((x, y) => x - y)).toEqual([0, 400]);
    client.close();
  });
});
