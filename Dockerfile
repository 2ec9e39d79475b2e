# syntax=docker/dockerfile:1
# One image for every process of the demo (examples/documents): the command
# picks the role (`serve`, `worker --queues ...`). See docs/deploy.md; for an
# image of your own app (a project with `celerity` as a dependency), see
# docs/examples/Dockerfile.user-app instead.

FROM node:22-slim AS build
WORKDIR /app
# better-sqlite3 compiles from source when no prebuilt binary matches the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY packages/celerity ./packages/celerity
COPY examples ./examples
# Every dependency of the workspaces; the core's `prepare` builds its dist/.
# The explicit build makes the step visible and is a no-op once built.
RUN npm ci && npm run build -w celerity
# What runs needs no TypeScript compiler, types or test tools: tsx, which the
# CLI loads the demo's TypeScript app with, is a dependency of the core.
RUN npm prune --omit=dev && npm cache clean --force

FROM node:22-slim
ENV NODE_ENV=production \
    CELERITY_UPLOAD_DIR=/data/uploads \
    CELERITY_SQLITE_PATH=/data/celerity.db
WORKDIR /app
# node_modules links the workspaces (node_modules/celerity -> packages/celerity,
# node_modules/.bin/celerity -> its bin): the core's built files and the
# examples go where those links point. The core's sources stay behind.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/packages/celerity/package.json ./packages/celerity/package.json
COPY --from=build /app/packages/celerity/bin ./packages/celerity/bin
COPY --from=build /app/packages/celerity/dist ./packages/celerity/dist
COPY --from=build /app/examples ./examples
# The upload directory is a volume shared by the API and the workers.
RUN mkdir -p /data/uploads && chown -R node:node /data
USER node
EXPOSE 8080
# The installed bin, run by node itself: Node is PID 1 (no shell, no
# wrapper) and handles SIGTERM, so a stopping container drains its jobs for
# CELERITY_SHUTDOWN_GRACE before it exits.
ENTRYPOINT ["node", "/app/node_modules/.bin/celerity"]
CMD ["serve", "--app", "examples/documents/app.ts"]
