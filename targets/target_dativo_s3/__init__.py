"""target-dativo-s3: streams as client-side encrypted Parquet or JSONL objects on S3."""
