# syntax=docker/dockerfile:1
# pushrelay: one image for every node. Build: docker build -t pushrelay:0.1.0 .
# test/integration/docker.test.ts and test/e2e/image.test.ts check this file
# against the code and run its commands.

# Node 24, the active LTS line (the suite also runs on 22: .ci/run).
ARG NODE_IMAGE=node:24-bookworm-slim

# Compiles TypeScript with the dev dependencies, which never reach the image.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only; no dependency of the relay needs an install script.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the relay's user: the process cannot rewrite its own code.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Its "type": "module" is what makes node load dist/ as ES modules.
COPY package.json ./
# The official image's "node" user, by number so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
# fetch is built into Node, so the slim image needs no curl; PORT follows the relay's own setting.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form, no shell and no npm in between: SIGTERM reaches node, which drains and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["start"]
