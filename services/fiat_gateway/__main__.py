from services.common import run
from services.fiat_gateway.app import create_app

run(create_app)
