import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { rawRequest } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// What examples/ send, delivered by a real relay process on a real Redis.
// Node and redis-cli examples run as they are; Ruby, PHP and Python are not
// on the test machines, so their requests are sent byte for byte as
// Net::HTTP.post_form, PHP's curl and requests send them.

const EXAMPLES = resolve(import.meta.dirname, '../../examples');
const source = (path: string) => readFileSync(resolve(EXAMPLES, path), 'utf8');
const run = promisify(execFile);

/** Ruby's URI.encode_www_form_component: space as +, only *-._ and alphanumerics left as they are. */
const rubyForm = (params: Record<string, string>) =>
  Object.entries(params)
    .map(([k, v]) =>
      [k, v]
        .map((s) =>
          Buffer.from(s, 'utf8')
            .toString('latin1')
            .replace(/[^*\-.0-9A-Z_a-z]/g, (c) =>
              c === ' ' ? '+' : `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
            ),
        )
        .join('='),
    )
    .join('&');

describe('the examples', () => {
  let redis: RedisServer;
  let node: RelayNode;
  let host: string;
  beforeAll(async () => {
    redis = await startRedis();
    node = await startProcess({ REDIS_URL: redis.url });
    host = `127.0.0.1:${node.port}`;
  });
  afterAll(async () => {
    await node?.stop();
    await redis?.stop();
  });

  const connect = async (user: string): Promise<TestClient> => connectClient(node.url, await token(user));

  it('Rails: post_form on the legacy route delivers, and answers 404 user_offline for the e-mail fallback', async () => {
    const job = source('rails/app/jobs/push_notification_job.rb');
    expect(job).toContain('Net::HTTP.post_form(uri, payload.transform_values(&:to_s))');
    expect(job).toContain('uri.path = "/message/');
    expect(job).toContain("error_code(res) == 'user_offline'");
    expect(source('rails/app/models/bid.rb')).toContain("'You have been outbid'");

    const body = rubyForm({ title: 'You have been outbid', url: 'https://shop.example/auctions/42' });
    expect(body).toBe('title=You+have+been+outbid&url=https%3A%2F%2Fshop.example%2Fauctions%2F42');
    const basic = Buffer.from(`${KEY.name}:${KEY.secret}`).toString('base64');
    const request = (user: string) =>
      [
        `POST /message/outbid/${user} HTTP/1.1`,
        'Accept-Encoding: gzip;q=1.0,deflate;q=0.6,identity;q=0.3',
        'Accept: */*',
        'User-Agent: Ruby',
        `Host: ${host}`,
        'Content-Type: application/x-www-form-urlencoded',
        `Authorization: Basic ${basic}`,
        `Content-Length: ${Buffer.byteLength(body)}`,
        '',
        '',
      ].join('\r\n');

    const offline = await rawRequest(node.port, request('alice'), body);
    expect(offline.status).toBe(404);
    expect((offline.body.error as { code: string }).code).toBe('user_offline');

    const alice = await connect('alice');
    const online = await rawRequest(node.port, request('alice'), body);
    expect(online.status).toBe(200);
    const [got] = await alice.waitForEvent('outbid');
    expect(got!.data).toEqual({ title: 'You have been outbid', url: 'https://shop.example/auctions/42' });
    expect(got!.meta!.channel).toBe('user:alice');
    alice.close();
  });

  it('PHP: curl with json_encode’s escaped slashes and \\u escapes delivers the decoded data', async () => {
    const php = source('php/publish.php');
    expect(php).toContain('CURLOPT_POSTFIELDS => json_encode($message)');
    expect(php).toContain("'Content-Type: application/json', 'Authorization: Bearer ' . $secret");
    // json_encode of the example's $message for user bob: "/" as "\/", é as \u00e9, [] for an empty array.
    const body =
      '{"event":"invoice","data":{"url":"https:\\/\\/shop.example\\/invoices\\/42.pdf","customer":"Jos\\u00e9","lines":[]},"users":["bob"],"id":"invoice-42-bob"}';
    const head = (length: number, extra: string[] = []) =>
      [
        'POST /v1/publish HTTP/1.1',
        `Host: ${host}`,
        'Accept: */*',
        'Content-Type: application/json',
        `Authorization: Bearer ${KEY.secret}`,
        `Content-Length: ${length}`,
        ...extra,
        '',
        '',
      ].join('\r\n');
    const bob = await connect('bob');
    const res = await rawRequest(node.port, head(Buffer.byteLength(body)), body);
    expect(res.status).toBe(200);
    expect(res.body.id).toBe('invoice-42-bob');
    expect((await bob.waitForEvent('invoice'))[0]!.data).toEqual({
      url: 'https://shop.example/invoices/42.pdf',
      customer: 'José',
      lines: [],
    });

    // Over 1 KiB, curl adds Expect: 100-continue and waits for the relay's 100 before the body.
    const lines = Array.from({ length: 40 }, (_, i) => ({ sku: `SKU-${i}`, qty: i }));
    const big = JSON.stringify({ event: 'invoice_lines', data: { lines }, users: ['bob'] });
    expect(Buffer.byteLength(big)).toBeGreaterThan(1024);
    const slow = await rawRequest(node.port, head(Buffer.byteLength(big), ['Expect: 100-continue']), big, {
      waitForContinue: true,
    });
    expect(slow.continued).toBe(true);
    expect(slow.status).toBe(200);
    expect(((await bob.waitForEvent('invoice_lines'))[0]!.data as { lines: unknown[] }).lines).toHaveLength(
      40,
    );
    bob.close();
  });

  it('Python: requests with json.dumps spacing, signed over exactly those bytes', async () => {
    const py = source('python/publish.py');
    expect(py).toContain('f"{timestamp}.{nonce}.POST.{path}.{body}"');
    expect(py).toContain('nonce = secrets.token_urlsafe(16)');
    expect(py).toContain('data=body');
    const body = '{"event": "report_ready", "data": {"report": "Q3", "pages": 12}, "users": ["carol"]}';
    const ts = String(Math.floor(Date.now() / 1000));
    const nonce = 'GmR4Jx0b3Qm1Xl_pYk-Hdw'; // what token_urlsafe(16) returns: 22 characters
    const signature = createHmac('sha256', KEY.secret)
      .update(`${ts}.${nonce}.POST./v1/publish.${body}`)
      .digest('hex');
    const head = [
      'POST /v1/publish HTTP/1.1',
      `Host: ${host}`,
      'User-Agent: python-requests/2.31.0',
      'Accept-Encoding: gzip, deflate',
      'Accept: */*',
      'Connection: keep-alive',
      'Content-Type: application/json',
      `X-Pushrelay-Key: ${KEY.name}`,
      `X-Pushrelay-Timestamp: ${ts}`,
      `X-Pushrelay-Nonce: ${nonce}`,
      `X-Pushrelay-Signature: ${signature}`,
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      '',
    ].join('\r\n');
    const carol = await connect('carol');
    const res = await rawRequest(node.port, head, body);
    expect(res.status).toBe(200);
    expect((await carol.waitForEvent('report_ready'))[0]!.data).toEqual({ report: 'Q3', pages: 12 });
    // The same request again (the same nonce) is a replay.
    const replay = await rawRequest(node.port, head, body);
    expect([replay.status, (replay.body.error as { code: string }).code]).toEqual([401, 'replayed_request']);
    carol.close();
  });

  it('Node: examples/node/publish.mjs runs as documented', async () => {
    const dave = await connect('dave');
    const env = { PATH: process.env.PATH, PUSHRELAY_URL: node.url, PUSHRELAY_SECRET: KEY.secret };
    const { stdout } = await run(process.execPath, [resolve(EXAMPLES, 'node/publish.mjs'), 'dave'], { env });
    expect(stdout).toBe('delivered to 1 socket(s) as order-42-shipped-dave\n');
    expect((await dave.waitForEvent('shipped'))[0]!.data).toEqual({ order: 42, carrier: 'DHL' });
    dave.close();
    const signed = await run(process.execPath, [resolve(EXAMPLES, 'node/publish.mjs'), 'nobody'], {
      env: { ...env, PUSHRELAY_KEY_NAME: KEY.name },
    });
    expect(signed.stdout).toBe('nobody is offline: send an e-mail instead\n');
    const refused = await run(process.execPath, [resolve(EXAMPLES, 'node/publish.mjs'), 'dave'], {
      env: { ...env, PUSHRELAY_SECRET: 'wrong-secret' },
    }).catch((e: { code: number; stderr: string }) => e);
    expect(refused).toMatchObject({
      code: 1,
      stderr: 'refused: invalid_key: unknown or wrong publisher key\n',
    });
  });

  it('the README’s Redis one-liners (redis-cli, Ruby redis gem, PHP phpredis) publish and XADD as documented', async () => {
    // Run as the README shows them, pointed at this test's Redis; the stream example's id is made
    // distinct per language (a repeat of one id is delivered once, by design). Python's redis-py is
    // not installed on the test machines, so its lines are not run.
    const readme = readFileSync(resolve(EXAMPLES, '../README.md'), 'utf8');
    const section = readme.slice(
      readme.indexOf('### Publishing through Redis'),
      readme.indexOf('**Pub/sub.**'),
    );
    const block = (lang: string) => new RegExp(`\`\`\`${lang}\n([\\s\\S]*?)\`\`\``).exec(section)![1]!;
    // A node takes raw PUBLISHes once it has joined raw ingest (within a heartbeat of starting;
    // until then a PUBLISH is lost, as the README says of pub/sub).
    await waitFor(async () => (await scrape(node.url)).value('pushrelay_ingest_members') >= 1, {
      what: 'the node to take raw PUBLISHes',
    });
    const alice = await connect('alice');
    const runs: [string, () => Promise<unknown>][] = [
      [
        'bash',
        () =>
          run(
            'bash',
            [
              '-c',
              block('bash')
                .replaceAll('redis-cli ', `redis-cli -p ${redis.port} `)
                .replaceAll('bid-140', 'bid-140-bash'),
            ],
            {
              env: { PATH: process.env.PATH },
            },
          ),
      ],
      [
        'ruby',
        () =>
          run('ruby', ['-rredis', '-rjson', '-e', block('ruby').replaceAll('bid-140', 'bid-140-ruby')], {
            env: { PATH: process.env.PATH, REDIS_URL: redis.url },
          }),
      ],
      [
        'php',
        () =>
          run(
            'php',
            [
              '-r',
              block('php')
                .replace("'127.0.0.1', 6379", `'127.0.0.1', ${redis.port}`)
                .replaceAll('bid-140', 'bid-140-php'),
            ],
            {
              env: { PATH: process.env.PATH },
            },
          ),
      ],
    ];
    for (const [lang, go] of runs) {
      const before = alice.events('bid').length;
      await go();
      const got = (await alice.waitForEvent('bid', before + 2)).slice(before);
      expect(
        got.map((e) => e.data),
        lang,
      ).toEqual([{ amount: 140 }, { amount: 140 }]);
      expect(got.every((e) => e.meta!.channel === 'user:alice')).toBe(true);
      expect(got.map((e) => e.meta!.id)).toContain(`bid-140-${lang}`);
    }
    alice.close();
  });

  it('redis-cli: examples/redis-cli/publish.sh runs as documented', async () => {
    const erin = await connect('erin');
    // The ingest lease is taken within a second of start; publish until a node holds it.
    await waitFor(async () => {
      await run('bash', [resolve(EXAMPLES, 'redis-cli/publish.sh'), 'erin'], {
        env: { PATH: process.env.PATH, REDIS_URL: redis.url },
      });
      await sleep(200);
      return erin.events('notification').length > 0;
    });
    expect(erin.events('notification')[0]!.data).toEqual({ text: 'hello from redis-cli' });
    expect(erin.events('notification')[0]!.meta!.channel).toBe('user:erin');
    erin.close();
  });
});
