import { resolve } from 'node:path';
import type { Page, WebSocket } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, launchBrowser, SCREENSHOTS, serveExamples } from '../helpers/browser.js';
import { KEY, READ_KEY, token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { startTcpBalancer, type TcpBalancer } from '../helpers/tcp-balancer.js';

// Real Chromium against two real relay processes on one Redis, behind a TCP
// balancer: the example page (examples/browser) served from its own origin,
// and the console served by the relay.

const EXAMPLES = resolve(import.meta.dirname, '../../examples/browser');

describe('in Chromium', () => {
  let redis: RedisServer;
  let a: RelayNode;
  let b: RelayNode;
  let lb: TcpBalancer;
  let site: Awaited<ReturnType<typeof serveExamples>>;
  let browser: Browser;

  beforeAll(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([
      startProcess({ REDIS_URL: redis.url }),
      startProcess({ REDIS_URL: redis.url }),
    ]);
    lb = await startTcpBalancer([a.port, b.port]);
    site = await serveExamples(EXAMPLES, lb.url);
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await site?.close();
    await lb?.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  /** The example page, connected as `user`, with the WebSockets it opened. */
  async function examplePage(user: string, transports?: string) {
    const page = await browser.context.newPage();
    const sockets: WebSocket[] = [];
    page.on('websocket', (ws) => sockets.push(ws));
    const t = await token(user, { channels: ['order:*'] });
    await page.goto(`${site.url}/index.html#token=${t}${transports ? `&transports=${transports}` : ''}`);
    await page.locator('#status', { hasText: /^connected$/ }).waitFor();
    return { page, sockets };
  }

  const item = (page: Page, text: string) => page.locator('#messages li', { hasText: text }).waitFor();
  const items = (page: Page) => page.locator('#messages li').allTextContents();

  it('the example page receives pushes over WebSocket', async () => {
    const { page, sockets } = await examplePage('alice', 'websocket');
    expect(await page.textContent('#user')).toBe('alice');
    expect(await page.textContent('#transport')).toBe('over websocket');
    await post(`${a.url}/v1/publish`, { event: 'bid', data: { amount: 120 }, users: ['alice'] });
    await post(`${b.url}/v1/publish`, { event: 'status', data: 'packed', channels: ['order:42'] });
    await item(page, 'user:alice #1 bid {"amount":120}');
    await item(page, 'status "packed"');
    expect(sockets.some((ws) => ws.url().startsWith(`${lb.url.replace('http', 'ws')}/socket.io/`))).toBe(
      true,
    );
    await page.screenshot({ path: `${SCREENSHOTS}/example-websocket.png` });
    await page.close();
  });

  it('the example page receives pushes over long-polling only', async () => {
    const { page, sockets } = await examplePage('bob', 'polling');
    expect(await page.textContent('#transport')).toBe('over polling');
    await post(`${a.url}/v1/publish`, { event: 'notification', data: { text: 'hi' }, users: ['bob'] });
    await item(page, 'user:bob #1 notification {"text":"hi"}');
    expect(sockets).toEqual([]);
    await page.close();
  });

  it('the console shows a published message in its live tail', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${a.url}/console`);
    // Before sign-in only the sign-in form shows: no panel, no sign-out button.
    await page.locator('#secret').waitFor();
    expect(await page.locator('#app').isVisible()).toBe(false);
    expect(await page.locator('#overview').isVisible()).toBe(false);
    expect(await page.locator('#sign-out').isVisible()).toBe(false);
    // A key without the admin scope does not open the console.
    await page.fill('#secret', READ_KEY.secret);
    await page.click('#login-form button');
    await page.locator('#login-error', { hasText: 'forbidden' }).waitFor();
    await page.screenshot({ path: `${SCREENSHOTS}/console-refused.png` });
    await page.fill('#secret', 'not-a-key');
    await page.click('#login-form button');
    await page.locator('#login-error', { hasText: 'invalid_key' }).waitFor();

    await page.fill('#secret', KEY.secret);
    await page.click('#login-form button');
    await page.locator('#app').waitFor();
    expect(await page.locator('#login').isVisible()).toBe(false);
    await page.locator('#node-rows tr').nth(1).waitFor();
    expect((await page.locator('#node-rows tr td:first-child').allTextContents()).sort()).toEqual(
      [a.id, b.id].sort(),
    );

    await page.fill('#tail-channel', 'order:7');
    await page.click('#tail-start');
    await page.locator('#tail-status', { hasText: 'watching order:7' }).waitFor();

    // Published from the console's own form...
    await page.fill('#publish-event', 'status');
    await page.selectOption('#publish-kind', 'channels');
    await page.fill('#publish-targets', 'order:7');
    await page.fill('#publish-data', '{"text":"from the console"}');
    await page.click('#publish-form button');
    await page.locator('#publish-result', { hasText: '"order:7"' }).waitFor();
    // ...and by a backend through another node.
    await post(`${b.url}/v1/publish`, { event: 'bid', data: { amount: 99 }, channels: ['order:7'] });
    const rows = page.locator('#tail-rows tr');
    await rows.nth(1).waitFor();
    const tail = await rows.allTextContents();
    expect(tail[1]).toContain('status1{"text":"from the console"}');
    expect(tail[0]).toContain('bid2{"amount":99}');

    await page.fill('#presence-target', 'order:7');
    await page.click('#presence-form button');
    await page.locator('#presence-summary', { hasText: '1 user(s), 1 socket(s) in order:7' }).waitFor();
    expect(await page.locator('#presence-users tr').allTextContents()).toEqual(['console@app1–']);
    await page.screenshot({ path: `${SCREENSHOTS}/console.png`, fullPage: true });
    await page.close();
  });

  it('after its node is killed the page reconnects to another and recovers what it missed', async () => {
    const { page } = await examplePage('carol');
    const first = await page.textContent('#node');
    expect(first).toBe(`to ${a.id}`);
    await post(`${b.url}/v1/publish`, { event: 'bid', data: 1, users: ['carol'] });
    await item(page, 'user:carol #1 bid 1');

    // No node takes the page until the missed messages are in history.
    lb.pause();
    await a.kill('SIGKILL');
    await page.locator('#status', { hasText: 'disconnected' }).waitFor();
    await post(`${b.url}/v1/publish`, { event: 'bid', data: 2, users: ['carol'] });
    await post(`${b.url}/v1/publish`, { event: 'status', data: 'missed', channels: ['order:42'] });
    await post(`${b.url}/v1/publish`, { event: 'bid', data: 3, users: ['carol'] });
    lb.resume();

    await page.locator('#node', { hasText: `to ${b.id}` }).waitFor({ timeout: 15_000 });
    await item(page, 'user:carol #3 bid 3');
    await item(page, 'status "missed"');
    const got = await items(page);
    expect(got.filter((t) => t.startsWith('user:carol'))).toEqual([
      'user:carol #1 bid 1',
      'user:carol #2 bid 2',
      'user:carol #3 bid 3',
    ]);
    expect(got.some((t) => t.startsWith('reload'))).toBe(false);
    await page.screenshot({ path: `${SCREENSHOTS}/example-recovered.png` });
    await page.close();
  });
});
