"""The local cloud: a gRPC server speaking Cloud Run v2, Secret Manager v1, Cloud SQL Admin, Logging v2 and
Operations, backed by local processes and real PostgreSQL clusters.

deployctl reaches it only over the wire, through the real Google client libraries; nothing outside this
package imports it (tests may, to start it in-process).
"""
