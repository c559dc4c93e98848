import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { RelayError } from '../errors.js';
import { errorResponses } from './schemas.js';
import type { HttpApp } from './types.js';

// Files `npm run build` produces (esbuild bundles) and the relay serves. A
// fixed table rather than a directory: no path from a request ever reaches
// the file system.

/** dist/ of this package, whether this module runs from dist/http or (in tests) from src/http. */
export const DIST_DIR = resolve(import.meta.dirname, '../../dist');

interface Asset {
  readonly file: string;
  readonly type: string;
}

const js = 'text/javascript; charset=utf-8';
const map = 'application/json; charset=utf-8';

export const CLIENT_ASSETS: Record<string, Asset> = {
  '/client/pushrelay.min.js': { file: 'client/pushrelay.min.js', type: js },
  '/client/pushrelay.min.js.map': { file: 'client/pushrelay.min.js.map', type: map },
};

export const CONSOLE_ASSETS: Record<string, Asset> = {
  '/console/': { file: 'console/index.html', type: 'text/html; charset=utf-8' },
  '/console/console.js': { file: 'console/console.js', type: js },
  '/console/console.js.map': { file: 'console/console.js.map', type: map },
  '/console/console.css': { file: 'console/console.css', type: 'text/css; charset=utf-8' },
};

/**
 * The console holds an admin secret in the page: no framing (clickjacking),
 * no script or connection anywhere but this origin, no referrer.
 */
const CONSOLE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

interface Loaded {
  readonly body: Buffer;
  readonly etag: string;
}

export function registerAssetRoutes(app: HttpApp, options: { console: boolean; dir?: string }): void {
  const dir = options.dir ?? DIST_DIR;
  const cache = new Map<string, Promise<Loaded>>();
  const load = (asset: Asset): Promise<Loaded> => {
    let loaded = cache.get(asset.file);
    if (loaded === undefined) {
      loaded = readFile(resolve(dir, asset.file)).then((body) => ({
        body,
        etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
      }));
      // A file missing now (not built yet) may be there on the next request.
      loaded.catch(() => cache.delete(asset.file));
      cache.set(asset.file, loaded);
    }
    return loaded;
  };

  const serve =
    (asset: Asset, headers: Record<string, string>) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
      let loaded: Loaded;
      try {
        loaded = await load(asset);
      } catch {
        throw new RelayError('not_found', `${request.url.split('?')[0]} is not built: run npm run build`);
      }
      reply.headers({
        ...headers,
        'content-type': asset.type,
        'x-content-type-options': 'nosniff',
        // Revalidated every time: a deploy changes the files under the same names.
        'cache-control': 'no-cache',
        etag: loaded.etag,
      });
      if (request.headers['if-none-match'] === loaded.etag) return reply.code(304).send();
      return reply.send(loaded.body);
    };

  const routes: [string, Asset, Record<string, string>][] = Object.entries(CLIENT_ASSETS).map(
    ([path, asset]) => [path, asset, { 'access-control-allow-origin': '*' }],
  );
  if (options.console) {
    for (const [path, asset] of Object.entries(CONSOLE_ASSETS)) routes.push([path, asset, CONSOLE_HEADERS]);
    // Relative URLs in the page resolve under /console/, also behind a proxy that adds a path prefix.
    app.get('/console', { schema: { response: errorResponses } }, async (_request, reply) =>
      reply.redirect('console/', 302),
    );
  }
  for (const [path, asset, headers] of routes) {
    app.get(path, { schema: { response: errorResponses } }, serve(asset, headers));
  }
}
