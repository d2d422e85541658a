from services.api_key_service.app import create_app
from services.common import run

run(create_app)
