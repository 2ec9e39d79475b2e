# syntax=docker/dockerfile:1
# One image for every Celerity process: the command picks the role
# (`serve`, `worker --queues ...`). See docs/deploy.md.

FROM node:22-slim AS deps
WORKDIR /app
# better-sqlite3 compiles from source when no prebuilt binary matches the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# tsx is a runtime dependency: the CLI loads the TypeScript app modules through it, so no build step.
RUN npm ci --omit=dev && npm cache clean --force

FROM node:22-slim
ENV NODE_ENV=production \
    CELERITY_UPLOAD_DIR=/data/uploads \
    CELERITY_SQLITE_PATH=/data/celerity.db
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY examples ./examples
# The upload directory is a volume shared by the API and the workers.
RUN mkdir -p /data/uploads && chown -R node:node /data
USER node
EXPOSE 8080
# Node is PID 1 and handles SIGTERM itself: it stops taking jobs and drains for CELERITY_SHUTDOWN_GRACE.
ENTRYPOINT ["node", "bin/celerity.js"]
CMD ["serve", "--app", "examples/documents/app.ts"]
