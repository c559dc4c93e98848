import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, launchBrowser, SCREENSHOTS } from '../helpers/browser.js';
import { connectClient, type TestClient } from '../helpers/clients.js';
import { KEY, token } from '../helpers/env.js';
import { get, post } from '../helpers/http.js';
import { scrape } from '../helpers/metrics.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';
import { type RedisServer, startRedis } from '../helpers/redis.js';
import { sleep, waitFor } from '../helpers/wait.js';

// The operator's console in real Chromium, against two real relay processes
// on one Redis. Node A starts first and routes the ingest stream with a
// small payload limit; node B serves the page. The dead-letter story is the
// one an operator lives: A refuses an entry over its limit, the limit is
// "raised" (A leaves, B takes the stream over), and retry from the page
// delivers it.

const ROUTER_ACTIVE = 'pushrelay_ingest_router_active';

async function routing(node: RelayNode): Promise<boolean> {
  return (await scrape(node.url)).value(ROUTER_ACTIVE, { source: 'stream' }) === 1;
}

/** A chart's point count and newest values, as the page exposes them. */
async function chart(page: Page, id: string): Promise<{ points: number; last: (number | null)[] }> {
  const el = page.locator(`#${id}`);
  return {
    points: Number((await el.getAttribute('data-points')) ?? 0),
    last: JSON.parse((await el.getAttribute('data-last')) ?? '[]') as (number | null)[],
  };
}

describe('the console in Chromium', () => {
  let redis: RedisServer;
  let a: RelayNode;
  let b: RelayNode;
  let browser: Browser;
  let page: Page;
  const requests: string[] = [];
  const clients: TestClient[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    a = await startProcess({
      REDIS_URL: redis.url,
      PUSHRELAY_MAX_PAYLOAD_BYTES: '1024',
      PUSHRELAY_STATS_INTERVAL_SECONDS: '1',
    });
    await waitFor(() => routing(a), { what: 'node A routing the ingest stream', timeoutMs: 15_000 });
    b = await startProcess({ REDIS_URL: redis.url, PUSHRELAY_STATS_INTERVAL_SECONDS: '1' });
    browser = await launchBrowser();
    page = await browser.context.newPage();
    page.on('request', (r) => requests.push(new URL(r.url()).pathname));
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await browser?.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it('before sign-in shows only the sign-in form and fetches nothing of the cluster', async () => {
    await page.goto(`${b.url}/console/`);
    await page.locator('#login-form').waitFor();
    await sleep(500);
    expect(await page.locator('#login').isVisible()).toBe(true);
    for (const id of ['app', 'overview', 'nodes', 'dead', 'presence', 'publish', 'tail', 'sign-out']) {
      expect(await page.locator(`#${id}`).isVisible(), `#${id} is visible before sign-in`).toBe(false);
    }
    // The page's own files only (a browser may also ask for /favicon.ico: no cluster data in that).
    expect(requests.filter((p) => !p.startsWith('/console/') && p !== '/favicon.ico')).toEqual([]);
    await page.screenshot({ path: `${SCREENSHOTS}/console-signin.png`, fullPage: true });

    // Keyboard only: the first Tab stop is the secret, Enter signs in.
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement?.id')).toBe('secret');
    await page.keyboard.type(KEY.secret);
    await page.keyboard.press('Enter');
    await page.locator('#overview').waitFor();
    expect(await page.locator('#login').isVisible()).toBe(false);
    expect(await page.evaluate('document.activeElement?.id')).toBe('scope');
    expect(requests.filter((p) => p.startsWith('/v1/'))[0]).toBe('/v1/admin/stats');
  });

  it('lists both nodes with version and state, and its charts move when traffic is sent', async () => {
    const rows = page.locator('#node-rows tr');
    await rows.nth(1).waitFor();
    const nodes = await rows.allTextContents();
    expect(nodes.some((r) => r.startsWith(a.id) && r.includes('serving'))).toBe(true);
    expect(nodes.some((r) => r.startsWith(b.id) && /serving\d+\.\d+\.\d+/.test(r))).toBe(true);
    await waitFor(async () => (await chart(page, 'chart-publishes')).points >= 2, { what: 'charts drawn' });
    expect(await page.locator('#chart-publishes canvas').count()).toBe(1);
    const before = await chart(page, 'chart-publishes');

    // A listener on each node, and publishes through both.
    for (const node of [a, b]) {
      const c = await connectClient(node.url, await token(`fan-${node.id}`, { channels: ['scores:*'] }));
      expect((await c.request<{ ok: boolean }>('subscribe', { channels: ['scores:1'] })).ok).toBe(true);
      clients.push(c);
    }
    const traffic = (async () => {
      for (let i = 0; i < 30; i++) {
        await Promise.all(
          [a, b].map((n) => post(`${n.url}/v1/publish`, { event: 'score', data: i, channels: ['scores:1'] })),
        );
        await sleep(100);
      }
    })();
    const moved = await waitFor(
      async () => {
        const now = await chart(page, 'chart-publishes');
        const http = (await page.locator('#chart-publishes .u-legend').textContent()) ?? '';
        return now.points > before.points && (now.last[0] ?? 0) > 0 && http.includes('http')
          ? now
          : undefined;
      },
      { what: 'the publishes chart to move', timeoutMs: 15_000 },
    );
    await traffic;
    expect(moved.points).toBeGreaterThan(before.points);
    // What the canvas shows, in words, for a screen reader.
    expect(await page.locator('#chart-publishes figcaption').textContent()).toMatch(/now: http \d/);
    const deliveries = await waitFor(async () => {
      const d = await chart(page, 'chart-deliveries');
      return (d.last[0] ?? 0) > 0 ? d : undefined;
    });
    expect(deliveries.points).toBeGreaterThan(0);
    expect(Number(await page.locator('#total-nodes').textContent())).toBe(2);
    await page.screenshot({ path: `${SCREENSHOTS}/console-charts.png`, fullPage: true });

    // One node alone.
    await page.selectOption('#scope', b.id);
    await waitFor(async () => (await chart(page, 'chart-connections')).last[0] !== undefined);
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(400);
    await page.screenshot({ path: `${SCREENSHOTS}/console-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.selectOption('#scope', '');
  });

  it('looks up the presence of a channel with its members and their user_info', async () => {
    const alice = await connectClient(
      b.url,
      await token('alice', { channels: ['room:*'], userInfo: { name: 'Alice Liddell', role: 'editor' } }),
    );
    clients.push(alice);
    expect((await alice.request<{ ok: boolean }>('subscribe', { channels: ['room:lobby'] })).ok).toBe(true);
    await page.fill('#presence-target', 'room:lobby');
    await page.click('#presence-form button');
    await page.locator('#presence-summary', { hasText: '1 user(s), 1 socket(s) in room:lobby' }).waitFor();
    expect(await page.locator('#presence-users tr').allTextContents()).toEqual([
      'alice1{"name":"Alice Liddell","role":"editor"}',
    ]);
    await page.screenshot({ path: `${SCREENSHOTS}/console-presence.png`, fullPage: true });
  });

  it('tails $broadcast', async () => {
    await page.fill('#tail-channel', '$broadcast');
    await page.click('#tail-start');
    await page.locator('#tail-status', { hasText: 'watching $broadcast' }).waitFor();
    await post(`${a.url}/v1/publish`, { event: 'maintenance', data: { at: '22:00' }, broadcast: true });
    await page.locator('#tail-rows tr', { hasText: 'maintenance' }).waitFor();
    await page.click('#tail-stop');
  });

  it("tails a user's own channel, published through the other node, without counting the user online", async () => {
    await page.fill('#tail-channel', 'user:erin');
    await page.click('#tail-start');
    await page.locator('#tail-status', { hasText: 'watching user:erin' }).waitFor();
    await post(`${a.url}/v1/publish`, { event: 'invoice', data: { total: 42 }, users: ['erin'] });
    await page.locator('#tail-rows tr', { hasText: 'invoice' }).waitFor();
    expect((await get<{ online: boolean }>(`${a.url}/v1/users/erin/presence`)).body.online).toBe(false);
    await page.screenshot({ path: `${SCREENSHOTS}/console-tail-user.png`, fullPage: true });
    await page.click('#tail-stop');
  });

  it('shows an ingest dead letter, and retrying it from the page delivers it', async () => {
    await page.fill('#tail-channel', 'news:1');
    await page.click('#tail-start');
    await page.locator('#tail-status', { hasText: 'watching news:1' }).waitFor();

    // 700 characters of Cyrillic: 1.4 KB, over node A's 1024-byte limit.
    const text = 'Ж'.repeat(700);
    const body = JSON.stringify({ event: 'story', channels: ['news:1'], data: { text } });
    await redis.client().xadd('pushrelay:publish', '*', 'body', body);
    const row = page.locator('#ingest-dead-rows tr', { hasText: 'payload_too_large' });
    await waitFor(
      async () => {
        await page.click('#ingest-dead-first');
        return (await row.count()) === 1;
      },
      { what: 'the dead letter in the page', intervalMs: 500 },
    );
    const id = (await row.getAttribute('data-id'))!;
    expect(await row.textContent()).toContain('ЖЖЖ');
    await page.screenshot({ path: `${SCREENSHOTS}/console-dead-letter.png`, fullPage: true });

    // The limit is raised: A goes (SIGTERM hands its stream work over), B routes from now on.
    await a.kill('SIGTERM');
    await waitFor(() => routing(b), { what: 'node B routing the ingest stream', timeoutMs: 15_000 });

    await page.getByRole('button', { name: `Retry dead letter ${id}` }).click();
    await page.locator('#ingest-dead-status', { hasText: `${id} re-queued` }).waitFor();
    await row.waitFor({ state: 'detached' });
    await page.locator('#tail-rows tr', { hasText: 'story' }).waitFor({ timeout: 15_000 });
    expect(await page.locator('#tail-rows tr').first().textContent()).toContain(text);
    expect(await redis.client().xlen('pushrelay:publish:dead')).toBe(0);
    expect(
      (await scrape(b.url)).value('pushrelay_console_actions_total', { action: 'retry', queue: 'ingest' }),
    ).toBe(1);
    await page.screenshot({ path: `${SCREENSHOTS}/console-retried.png`, fullPage: true });
  });

  it('says webhooks are not configured', async () => {
    await page.locator('#webhook-status', { hasText: 'webhooks not configured' }).waitFor();
  });
});
