from services.common import run
from services.cross_chain_integration.app import create_app

run(create_app)
