"""Reports what the app's boto3 meets on the emulator (written for these tests).

At start: boto3's version, the credentials its chain found (their method, access key and a hash of the
secret, never the secret itself), the region, and the AWS variables the emulator set. Then every 5th frame
up to the 20th it puts two CloudWatch metrics, and at frame 10 it makes an S3 call, each reported with its
outcome; it never calls AWS when it was given credentials (``--aws host``), since tests run offline.
"""

import hashlib
import json
import os

import boto3
import botocore
import panoramasdk

REGION = "us-west-2"


def report(kind, **fields):
    fields["kind"] = kind
    print("e2e-report " + json.dumps(fields), flush=True)


def outcome(call):
    try:
        call()
    except Exception as error:  # the report says what boto3 raised
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        return {"ok": False, "error": type(error).__name__, "code": code, "message": str(error)}
    return {"ok": True}


class Probe(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.frames = 0
        session = boto3.session.Session()
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
        self.calls = "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in os.environ
        self.region = session.region_name or REGION
        report(
            "aws-start",
            boto3=boto3.__version__,
            botocore=botocore.__version__,
            method=found.method if found is not None else None,
            access_key=frozen.access_key if frozen else None,
            secret_sha256=hashlib.sha256(frozen.secret_key.encode()).hexdigest() if frozen else None,
            region=session.region_name,
            env=sorted(
                name for name in os.environ if name.startswith("AWS_") or name.lower() == "https_proxy"
            ),
        )

    def put(self):
        client = boto3.client("cloudwatch", region_name=self.region)
        client.put_metric_data(
            Namespace="EmulatorProbe",
            MetricData=[
                {
                    "MetricName": "Frames",
                    "Value": float(self.frames),
                    "Unit": "Count",
                    "Dimensions": [{"Name": "Client", "Value": "boto3-" + boto3.__version__}],
                },
                {"MetricName": "Batch", "Values": [1.0, 3.0], "Counts": [1.0, 2.0]},
            ],
        )

    def run(self):
        while True:
            streams = self.inputs.video_in.get()
            self.frames += 1
            if self.calls and self.frames % 5 == 0 and self.frames <= 20:
                report("aws-put", frame=self.frames, **outcome(self.put))
            if self.calls and self.frames == 10:
                s3 = boto3.client("s3", region_name=self.region)
                report("aws-other", **outcome(s3.list_buckets))
            self.outputs.video_out.put(streams)


Probe().run()
