"""Create a bucket on the S3 server once it answers: make-bucket.py URL BUCKET."""
import sys
import time
import urllib.error
import urllib.request

url, bucket = sys.argv[1], sys.argv[2]
for attempt in range(120):
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT"), timeout=5)
        print(f"bucket {bucket} ready at {url}")
        sys.exit(0)
    except (urllib.error.URLError, ConnectionError) as e:
        time.sleep(0.5)
print(f"the S3 server at {url} never answered", file=sys.stderr)
sys.exit(1)
