# frozen_string_literal: true

module BoshTemplate
  RSpec.describe 'iptables-logger job' do
    let(:job) { release.job('iptables-logger') }
    let(:instance) { InstanceSpec.new(ip: '10.0.16.15', id: 'cell-guid') }

    it 'renders config/iptables-logger.json with upstream defaults' do
      config = JSON.parse(job.template('config/iptables-logger.json').render({}, spec: instance))
      expect(config).to eq(
        'kernel_log_file' => '/var/log/kern.log',
        'container_metadata_file' => '/var/vcap/data/container-metadata/store.json',
        'output_log_file' => '/var/vcap/sys/log/iptables-logger/iptables.log',
        'metron_address' => '127.0.0.1:3457',
        'host_ip' => '10.0.16.15',
        'host_guid' => 'cell-guid',
        'log_timestamp_format' => 'rfc3339'
      )
    end

    it 'rejects an unknown timestamp format' do
      expect { job.template('config/iptables-logger.json').render({ 'logging' => { 'format' => { 'timestamp' => 'unix' } } }) }
        .to raise_error("'unix' is not a valid timestamp format for the property 'logging.format.timestamp'. " \
                        "Valid options are: 'rfc3339' and 'deprecated'.")
    end

    it 'reads /var/log through an unrestricted bpm volume' do
      process = YAML.safe_load(job.template('config/bpm.yml').render({}))['processes'][0]
      expect(process['unsafe']).to eq('privileged' => true, 'unrestricted_volumes' => [{ 'path' => '/var/log' }])
    end
  end
end
